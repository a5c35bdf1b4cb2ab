"""Auth, roles, upload limits and bad requests: 4xx with a clear message, nothing half-written."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from segloop.api import create_app
from segloop.config import Settings
from segloop.jobs.store import JobStore

from .conftest import liver_box, make_settings, upload


def _leftovers(s: Settings) -> list[Path]:
    """Files left under tmp/ and jobs/ (must stay empty after a refused upload)."""
    return [p for d in (s.tmp_dir, s.jobs_dir) for p in d.rglob("*")]


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[TestClient, Settings, dict[str, dict[str, str]]]]:
    s = make_settings(tmp_path, host="0.0.0.0", max_upload_bytes=5_000_000)
    assert s.auth_required
    store = JobStore(s)
    keys = {name: {"X-API-Key": store.add_user(name, role)} for name, role in
            (("ann", "annotator"), ("ann2", "annotator"), ("rev", "reviewer"),
             ("boss", "admin"))}
    store.close()
    with TestClient(create_app(s)) as c:
        yield c, s, keys


def test_keys_and_roles(secured, data: Path) -> None:  # type: ignore[no-untyped-def]
    c, _, keys = secured
    assert c.get("/health").status_code == 200  # liveness needs no key
    r = c.get("/api/v1/jobs")
    assert r.status_code == 401 and "API key" in r.json()["detail"]
    r = c.get("/api/v1/jobs", headers={"X-API-Key": "sl_wrong"})
    assert r.status_code == 401 and r.json()["detail"] == "invalid API key"
    bearer = {"Authorization": "Bearer " + keys["ann"]["X-API-Key"]}
    assert c.get("/api/v1/jobs", headers=bearer).status_code == 200

    jid = upload(c, data / "totalseg/example_mr_sm.nii.gz", headers=keys["ann"]).json()["job_id"]
    # another annotator can neither see nor touch it
    for method, path in (("get", ""), ("get", "/status"), ("get", "/volume"),
                         ("get", "/result"), ("delete", ""), ("post", "/undo")):
        r = getattr(c, method)(f"/api/v1/jobs/{jid}{path}", headers=keys["ann2"])
        assert r.status_code == 404, (path, r.text)
        assert "another user" in r.json()["detail"]
    assert c.get("/api/v1/jobs", headers=keys["ann2"]).json() == []
    # reviewers see it; only reviewers review, reload, clean up
    assert c.get(f"/api/v1/jobs/{jid}", headers=keys["rev"]).status_code == 200
    for path in ("/api/v1/system/model/reload", "/api/v1/system/cleanup"):
        r = c.post(path, headers=keys["ann"])
        assert r.status_code == 403 and "reviewer" in r.json()["detail"]
    assert c.post("/api/v1/system/cleanup", headers=keys["rev"]).status_code == 200
    assert c.get("/api/v1/system/audit", headers=keys["ann"]).status_code == 403
    audit = c.get("/api/v1/system/audit", headers=keys["boss"]).json()
    assert any(a["action"] == "upload" and a["user"] == "ann" for a in audit)
    # EventSource cannot send headers: ?api_key= works too
    z, box = 10, [30, 30, 60, 60]
    t = c.post(f"/api/v1/jobs/{jid}/initial-mask", json={"slice_index": z, "box": box},
               headers=keys["ann"]).json()["task_id"]
    with c.stream("GET", f"/api/v1/jobs/{jid}/events",
                  params={"task_id": t, "api_key": keys["ann"]["X-API-Key"]}) as r:
        assert r.status_code == 200
        text = "".join(r.iter_text())
    assert "event: done" in text or "event: failed" in text
    r = c.post(f"/api/v1/jobs/{jid}/review", headers=keys["ann"])
    assert r.status_code == 403
    assert c.post(f"/api/v1/jobs/{jid}/review", headers=keys["rev"]).status_code == 200
    # deleting: owner yes (others' job needs reviewer); annotator 2 cannot even see it
    assert c.delete(f"/api/v1/jobs/{jid}", headers=keys["ann"]).status_code == 204


def test_bad_uploads_leave_nothing(secured, data: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    c, s, keys = secured
    h = keys["ann"]
    # a 10 GB claimed upload is refused from its Content-Length, before reading the body
    r = c.post("/api/v1/jobs", content=b"x" * 100,
               headers={**h, "Content-Length": str(10 * 1024**3),
                        "Content-Type": "application/octet-stream"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    # a body growing past the limit while streaming (no Content-Length): cut off
    def chunks() -> Iterator[bytes]:
        for _ in range(200):
            yield b"\0" * 65536

    r = c.post("/api/v1/jobs", content=chunks(), headers={**h,
               "Content-Type": "application/octet-stream"})
    assert r.status_code == 413
    # zip with ../ paths
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../../evil.dcm", b"x" * 200)
    r = c.post("/api/v1/jobs", files={"file": ("s.zip", buf.getvalue())}, headers=h)
    assert r.status_code == 422 and "outside the archive" in r.json()["detail"]
    assert not (s.home.parent / "evil.dcm").exists()
    # 4D volume
    img = nib.Nifti1Image(np.zeros((8, 8, 8, 3), np.int16), np.eye(4))
    r = c.post("/api/v1/jobs", files={"file": ("x.nii", img.to_bytes())}, headers=h)
    assert r.status_code == 422 and "4D" in r.json()["detail"], r.text
    # not an image at all
    r = c.post("/api/v1/jobs", files={"file": ("x.nii.gz", b"hello world, no image")}, headers=h)
    assert r.status_code == 415
    # the message names the client's file, never a server-side path
    detail = r.json()["detail"]
    assert detail.startswith("x.nii.gz") and str(s.home) not in detail and "upload-" not in detail, detail
    # a form without a file
    r = c.post("/api/v1/jobs", files={"x": (None, "1")}, headers=h)
    assert r.status_code == 422 and "no file" in r.json()["detail"]
    assert _leftovers(s) == []
    assert c.get("/api/v1/jobs", headers=h).json() == []


def test_bad_requests(client: TestClient, data: Path, settings: Settings) -> None:
    r = client.get("/api/v1/jobs/0b7f8a8e-0000-4000-8000-000000000000")
    assert r.status_code == 404 and "no job" in r.json()["detail"]
    assert client.get("/api/v1/jobs/..%2F..%2Fetc").status_code == 404
    jid = upload(client, data / "totalseg/example_ct_sm.nii.gz").json()["job_id"]
    r = client.post(f"/api/v1/jobs/{jid}/initial-mask", json={"slice_index": 3,
                                                             "box": [10, 10, 500, 50]})
    assert r.status_code == 422 and "outside the slice" in r.json()["detail"]
    r = client.post(f"/api/v1/jobs/{jid}/initial-mask", json={"slice_index": 99,
                                                             "box": [10, 10, 50, 50]})
    assert r.status_code == 422 and "out of range" in r.json()["detail"]
    r = client.post(f"/api/v1/jobs/{jid}/initial-mask", json={"slice_index": 3})
    assert r.status_code == 422 and "box or at least one point" in r.json()["detail"]
    r = client.post(f"/api/v1/jobs/{jid}/propagate", json={"object_id": 3})
    assert r.status_code == 409 and "initial-mask" in r.json()["detail"]
    r = client.post(f"/api/v1/jobs/{jid}/initial-mask", json={"slice_index": 3, "box": [1, 1, 9, 9],
                                                             "engine": "nope"})
    assert r.status_code == 422 and "unknown engine" in r.json()["detail"]
    assert client.post(f"/api/v1/jobs/{jid}/undo").status_code == 409
    r = client.put(f"/api/v1/jobs/{jid}/mask", content=b"not a nifti")
    assert r.status_code == 422
    bad = nib.Nifti1Image(np.zeros((5, 5, 5), np.uint8), np.eye(4))
    r = client.put(f"/api/v1/jobs/{jid}/mask", content=bad.to_bytes())
    assert r.status_code == 422 and "shape" in r.json()["detail"]
    assert client.get(f"/api/v1/jobs/{jid}/versions").json() == []
    assert client.get(f"/api/v1/jobs/{jid}/result", params={"format": "png"}).status_code == 422
    # nothing was queued by the refused requests
    assert client.get(f"/api/v1/jobs/{jid}/status").json()["state"] == "ready"
    z, box, _ = liver_box(data)
    assert z < 30 and box


def test_cors(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path / "a"))) as c:
        r = c.get("/health", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers
    s = make_settings(tmp_path / "b", cors_origins=["http://viewer.example"])
    with TestClient(create_app(s)) as c:
        r = c.get("/health", headers={"Origin": "http://viewer.example"})
        assert r.headers["access-control-allow-origin"] == "http://viewer.example"
        r = c.get("/health", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers
