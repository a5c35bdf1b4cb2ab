"""Server-side drafts on a real CT: a draft is kept, described and returned, never counted as a
version; saving it makes a normal version (and removes it), but not over a version made after
the draft's base; discarding deletes it; bad drafts get a clear 4xx and touch nothing saved."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from fastapi.testclient import TestClient

from .conftest import nifti_bytes, upload

CT = "totalseg/example_ct_sm.nii.gz"


def _affine(client: TestClient, jid: str) -> np.ndarray:
    img: Any = nib.Nifti1Image.from_bytes(client.get(f"/api/v1/jobs/{jid}/volume").content)
    return np.asarray(img.affine)


def _versions(client: TestClient, jid: str) -> list[int]:
    return [v["version"] for v in client.get(f"/api/v1/jobs/{jid}/versions").json()]


def test_a_draft_is_kept_offered_saved_and_discarded(client: TestClient, data: Path) -> None:
    job = upload(client, data / CT).json()
    jid, shape = job["job_id"], tuple(job["shape"])
    url = f"/api/v1/jobs/{jid}/draft"
    assert client.get(url).status_code == 404 and "no draft" in client.get(url).text
    history = _versions(client, jid)
    lab = np.zeros(shape, np.uint8)
    lab[40:60, 30:50, 10:14] = 1
    aff = _affine(client, jid)
    r = client.put(url, content=gzip.compress(nifti_bytes(lab, aff)))
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["base_version"] == 0 and d["voxels"] == int(lab.sum()) and d["saved_at"]
    assert client.get(url).json() == d
    # not a version: the history and the current version are unchanged
    assert _versions(client, jid) == history
    assert client.get(f"/api/v1/jobs/{jid}").json()["current_version"] == 0
    got = client.get(url + "/mask")
    assert got.status_code == 200 and got.headers["x-draft-base-version"] == "0"
    back: Any = nib.Nifti1Image.from_bytes(gzip.decompress(got.content))
    assert np.array_equal(np.asarray(back.dataobj), lab)

    before = _versions(client, jid)
    saved = client.post(url + "/save")
    assert saved.status_code == 200, saved.text
    n = saved.json()["version"]
    assert _versions(client, jid) == [*before, n]
    res = client.get(f"/api/v1/jobs/{jid}/result",
                     params={"format": "nii.gz", "grid": "canonical", "version": n})
    img: Any = nib.Nifti1Image.from_bytes(gzip.decompress(res.content))
    assert np.array_equal(np.asarray(img.dataobj), lab)
    assert client.get(url).status_code == 404, "a saved draft is gone"

    lab2 = lab.copy()
    lab2[40:60, 30:50, 14] = 1
    r = client.put(url, params={"base_version": n}, content=nifti_bytes(lab2, aff))
    assert r.status_code == 200 and r.json()["base_version"] == n
    assert client.delete(url).status_code == 204
    assert client.get(url).status_code == 404 and client.post(url + "/save").status_code == 404
    assert client.delete(url).status_code == 204  # discarding twice is harmless
    assert _versions(client, jid) == [*before, n]


def test_bad_drafts_are_refused_and_keep_the_saved_one(client: TestClient, data: Path) -> None:
    job = upload(client, data / CT).json()
    jid, shape = job["job_id"], tuple(job["shape"])
    url = f"/api/v1/jobs/{jid}/draft"
    aff = _affine(client, jid)
    good = np.zeros(shape, np.uint8)
    good[5:9, 5:9, 5] = 1
    assert client.put(url, content=nifti_bytes(good, aff)).status_code == 200
    small = np.zeros((4, 4, 4), np.uint8)
    r = client.put(url, content=nifti_bytes(small, np.eye(4)))
    assert r.status_code == 422 and "shape" in r.json()["detail"]
    r = client.put(url, params={"base_version": 7}, content=nifti_bytes(good, aff))
    assert r.status_code == 422 and "base_version 7" in r.json()["detail"]
    r = client.put(url, content=b"not a nifti file at all")
    assert 400 <= r.status_code < 500 and "NIfTI" in r.json()["detail"]
    assert client.get(url).json()["voxels"] == int(good.sum()), "a refused draft replaced one"
    assert client.get("/api/v1/jobs/not-a-job/draft").status_code == 404


def test_a_draft_painted_on_an_older_version_is_not_saved_over_a_newer_one(
        client: TestClient, data: Path) -> None:
    job = upload(client, data / CT).json()
    jid, shape = job["job_id"], tuple(job["shape"])
    url = f"/api/v1/jobs/{jid}/draft"
    aff = _affine(client, jid)
    mine = np.zeros(shape, np.uint8)
    mine[40:60, 30:50, 10:14] = 1
    assert client.put(url, content=nifti_bytes(mine, aff)).json()["base_version"] == 0
    # meanwhile someone else saves version 1
    theirs = np.zeros(shape, np.uint8)
    theirs[10:20, 10:20, 5:8] = 1
    r = client.put(f"/api/v1/jobs/{jid}/mask", content=nifti_bytes(theirs, aff))
    assert r.status_code == 200 and r.json()["version"] == 1, r.text
    history = _versions(client, jid)

    saved = client.post(url + "/save")
    assert saved.status_code == 409, saved.text
    detail = saved.json()["detail"]
    assert "version 1 is current" in detail and "made on version 0" in detail, detail
    assert "the draft is kept" in detail, detail
    assert _versions(client, jid) == history, "nothing was stored"
    assert client.get(f"/api/v1/jobs/{jid}").json()["current_version"] == 1
    assert client.get(url).status_code == 200, "the draft is kept"
    back: Any = nib.Nifti1Image.from_bytes(gzip.decompress(client.get(url + "/mask").content))
    assert np.array_equal(np.asarray(back.dataobj), mine)
