"""``PUT /api/v1/jobs/{id}/mask?base_version=N``: a label map saved on a version that is no
longer current is refused (409, naming both versions) instead of silently undoing the newer
one; without the parameter an upload becomes the newest version as before."""

from __future__ import annotations

import gzip
import threading
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from fastapi.testclient import TestClient

from .conftest import nifti_bytes, upload

CT = "totalseg/example_ct_sm.nii.gz"


def _job(client: TestClient, data: Path) -> tuple[str, np.ndarray, np.ndarray]:
    """A job with version 1: object 1 as a block on slices 8..12; its shape's zeros, affine."""
    jid = upload(client, data / CT).json()["job_id"]
    ref: Any = nib.load(str(data / CT))
    lab = np.zeros(ref.shape, np.uint8)
    lab[40:60, 40:60, 8:13] = 1
    r = client.put(f"/api/v1/jobs/{jid}/mask", content=nifti_bytes(lab, ref.affine))
    assert r.status_code == 200 and r.json()["version"] == 1, r.text
    return jid, lab, ref.affine


def _current(client: TestClient, jid: str) -> tuple[np.ndarray, int]:
    r = client.get(f"/api/v1/jobs/{jid}/result", params={"format": "nii.gz", "grid": "canonical"})
    assert r.status_code == 200, r.text
    img: Any = nib.Nifti1Image.from_bytes(gzip.decompress(r.content))
    return np.asarray(img.dataobj), int(r.headers["X-Mask-Version"])


def _versions(client: TestClient, jid: str) -> list[int]:
    return [v["version"] for v in client.get(f"/api/v1/jobs/{jid}/versions").json()]


def test_a_save_on_a_stale_base_is_a_409_and_keeps_the_newer_edit(
        client: TestClient, data: Path) -> None:
    jid, lab, affine = _job(client, data)
    r = client.post(f"/api/v1/jobs/{jid}/edit", json={
        "op": "clear-slices", "object_id": 1, "first_slice": 10, "last_slice": 10})
    assert r.status_code == 200 and r.json()["version"] == 2, r.text
    mine = lab.copy()
    mine[40:60, 70:80, 11] = 1  # a stroke painted on version 1, which still shows slice 10
    r = client.put(f"/api/v1/jobs/{jid}/mask", params={"base_version": 1},
                   content=nifti_bytes(mine, affine))
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert "version 2 is current" in detail and "made on version 1" in detail, detail
    assert _versions(client, jid) == [1, 2]
    now, n = _current(client, jid)
    assert n == 2 and not now[:, :, 10].any()  # the clear stands
    r = client.put(f"/api/v1/jobs/{jid}/mask", params={"base_version": 2},
                   content=nifti_bytes(mine, affine))
    assert r.status_code == 200 and r.json()["version"] == 3, r.text


def test_without_base_version_an_upload_is_stored_as_before(
        client: TestClient, data: Path) -> None:
    jid, lab, affine = _job(client, data)
    client.post(f"/api/v1/jobs/{jid}/edit", json={
        "op": "clear-slices", "object_id": 1, "first_slice": 10, "last_slice": 10})
    r = client.put(f"/api/v1/jobs/{jid}/mask", content=nifti_bytes(lab, affine))
    assert r.status_code == 200 and r.json()["version"] == 3, r.text
    assert client.put(f"/api/v1/jobs/{jid}/mask", params={"base_version": -1},
                      content=nifti_bytes(lab, affine)).status_code == 422


def test_two_saves_on_the_same_base_one_wins_the_other_is_a_409(
        client: TestClient, data: Path) -> None:
    jid, lab, affine = _job(client, data)
    bodies = []
    for z in (3, 20):
        m = lab.copy()
        m[10:20, 10:20, z] = 1
        bodies.append(nifti_bytes(m, affine))
    start = threading.Barrier(2)
    codes: list[int] = []

    def save(body: bytes) -> None:
        start.wait()
        codes.append(client.put(f"/api/v1/jobs/{jid}/mask", params={"base_version": 1},
                                content=body).status_code)

    threads = [threading.Thread(target=save, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(codes) == [200, 409], codes
    assert _versions(client, jid) == [1, 2]  # every stored version is listed; none lost
    now, n = _current(client, jid)
    assert n == 2 and now[:, :, 8:13].any()  # version 1's object is still there
    assert now[15, 15, 3] != now[15, 15, 20]  # one writer's block, not both


def test_two_edits_on_the_same_version_one_wins_the_other_is_a_409(
        client: TestClient, data: Path) -> None:
    """``POST .../edit`` checks base_version, then reads, edits and stores: the store's own
    check keeps a second edit on the same version from undoing the first."""
    jid, _, _ = _job(client, data)
    start = threading.Barrier(2)
    codes: list[int] = []

    def edit(z: int) -> None:
        start.wait()
        codes.append(client.post(f"/api/v1/jobs/{jid}/edit", json={
            "op": "clear-slices", "object_id": 1, "first_slice": z, "last_slice": z,
            "base_version": 1}).status_code)

    threads = [threading.Thread(target=edit, args=(z,)) for z in (9, 11)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(codes) == [200, 409], codes
    assert _versions(client, jid) == [1, 2]
    now, _ = _current(client, jid)
    assert int(now[:, :, 8:13].any(axis=(0, 1)).sum()) == 4  # one slice cleared, not both


def test_an_edit_whose_base_is_stored_over_before_it_reads_the_mask_is_a_409(
        client: TestClient, data: Path, monkeypatch: Any) -> None:
    """The race behind the test above, made deterministic: another writer stores version 2
    after ``POST .../edit`` checked ``base_version`` 1 and before it read the label map. The
    edit was made on version 1, so it is refused; applied to version 2 it would have merged
    both edits without the user seeing version 2."""
    jid, _, _ = _job(client, data)
    store: Any = client.app.state.services.store  # type: ignore[attr-defined]
    real_labels = store.labels
    raced: list[int] = []

    def labels_after_another_writer(job_id: str, who: Any, *a: Any, **k: Any) -> Any:
        if not raced:
            lab, n = real_labels(job_id, who)
            other = lab.copy()
            other[:, :, 9] = 0  # the other writer cleared slice 9 of version 1
            raced.append(store.edit_mask(job_id, who, other, source="other",
                                         expect_version=n))
        return real_labels(job_id, who, *a, **k)

    monkeypatch.setattr(store, "labels", labels_after_another_writer)
    r = client.post(f"/api/v1/jobs/{jid}/edit", json={
        "op": "clear-slices", "object_id": 1, "first_slice": 11, "last_slice": 11,
        "base_version": 1})
    assert raced == [2]
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert "version 2 is current" in detail and "made on 1" in detail, detail
    monkeypatch.undo()
    assert _versions(client, jid) == [1, 2]
    now, n = _current(client, jid)
    assert n == 2 and not now[:, :, 9].any() and now[:, :, 11].any()  # the other edit only
