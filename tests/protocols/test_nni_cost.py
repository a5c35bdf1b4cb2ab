"""nnInteractive's first box (the requests its client sends, in process): the changed-box diff
is made from the label map the worker computed, while the version is flushed to disk, not
from the version file read back after the commit; it is the same diff."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from realdata import SHARED_DATA, need_shared_data
from segloop import fsio
from segloop.api.app import create_app
from segloop.config import load_settings
from segloop.io import load_volume
from segloop.jobs import files
from segloop.jobs.store import LOCAL_ADMIN
from segloop.protocols import mount, nni_array
from segloop.protocols.nni_lease import Lease

CT = SHARED_DATA / "totalseg" / "example_ct_sm.nii.gz"
BOX, Z = (44, 27, 104, 81), 24


def _lease(c: TestClient) -> dict[str, str]:
    token = c.post("/nninteractive/claim").json()["lease_token"]
    head = {"X-Lease-Token": token}
    can = load_volume(CT).canonical()
    arr = np.asarray(can.data, np.float32)[None]
    meta = {"image_properties": {"spacing": list(can.spacing)}}
    r = c.post("/nninteractive/set_image", content=nni_array.pack(arr),
               headers={**head, "X-Meta": json.dumps(meta)})
    assert r.status_code == 200, r.text
    r = c.post("/nninteractive/set_target_buffer", headers=head,
               json={"shape": list(arr.shape[1:]), "dtype": "uint8"})
    assert r.status_code == 200, r.text
    return head


def _box(c: TestClient, head: dict[str, str]) -> tuple[list[list[int]], np.ndarray]:
    b = BOX
    r = c.post("/nninteractive/add_bbox_interaction", headers=head, json={
        "bbox_coords": [[b[0], b[2] + 1], [b[1], b[3] + 1], [Z, Z + 1]],
        "include_interaction": True, "run_prediction": True})
    assert r.status_code == 200, r.text
    meta = json.loads(r.headers["X-Meta"])
    return meta["bbox"], nni_array.unpack(r.content, 10**9)


def test_the_first_box_diff_is_made_while_the_version_is_flushed(tmp_path: Path,
                                                                 monkeypatch: Any) -> None:
    need_shared_data()
    s = load_settings(None, home=tmp_path / "home", json_logs=False, default_engine="classic")
    app = create_app(s)
    mount(app)
    with TestClient(app) as c:
        _box(c, _lease(c))  # warm: engine imports and the first session
        made = threading.Event()
        overlapped: list[bool] = []
        reads: list[Path] = []
        real_diff = getattr(Lease, "diff_to", None)
        real_fsync, real_load = fsio.fsync_file, files.load_labels

        def diff_to(self: Lease, *a: Any) -> Any:
            assert real_diff is not None
            out = real_diff(self, *a)
            made.set()
            return out

        def fsync(path: Any) -> None:
            if "versions" in str(path):
                overlapped.append(made.wait(10))  # old code: the diff came after the commit
            real_fsync(path)

        def load(path: Path) -> Any:
            reads.append(path)
            return real_load(path)

        head = _lease(c)
        monkeypatch.setattr(Lease, "diff_to", diff_to, raising=False)
        monkeypatch.setattr(fsio, "fsync_file", fsync)
        monkeypatch.setattr(files, "load_labels", load)
        bbox, values = _box(c, head)
        assert overlapped == [True], "the diff was not made during the version's fsync"
        assert reads == [], "the diff read the version file back"
        monkeypatch.undo()
        job = c.get("/nninteractive/lease_status", headers=head).json()["job_id"]
        labels = c.app.state.services.store.labels  # type: ignore[attr-defined]
        stored, n = labels(job, LOCAL_ADMIN)
        assert n == 1 and values.sum() == (stored == 1).sum() > 0
        assert all(hi - lo > 1 for lo, hi in bbox)  # a 3D mask over several slices
