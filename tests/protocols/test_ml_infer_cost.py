"""What one MONAI Label ``/infer`` of a new ROI costs the service beyond the engine (counts and
orderings, never times): the result file is built while the version is flushed to disk, from
the label map the worker computed (no read-back of the version file), the job is read once,
and a session in use is not rewritten on every call -- while the answer still comes only
after the version is committed, and a session idle for a while is still touched."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import text

from realdata import SHARED_DATA, need_shared_data
from segloop import fsio
from segloop.api.app import create_app
from segloop.config import load_settings
from segloop.jobs import files, progress
from segloop.jobs.store import LOCAL_ADMIN
from segloop.protocols import ml_geometry, mount
from sqlstatements import recorded_statements

CT = SHARED_DATA / "totalseg" / "example_ct_sm.nii.gz"
BOX, BOX2 = (44, 27, 104, 81), (46, 29, 102, 79)


def _client(tmp_path: Path) -> TestClient:
    s = load_settings(None, home=tmp_path / "home", json_logs=False, default_engine="classic")
    app = create_app(s)
    mount(app)  # as `segloop serve` does
    return TestClient(app)


def _session(c: TestClient) -> str:
    r = c.put("/monailabel/session/", files={"file": ("ct.nii.gz", CT.read_bytes())})
    assert r.status_code == 200, r.text
    return str(r.json()["session_id"])


def _infer(c: TestClient, sid: str, box: tuple[int, int, int, int]) -> bytes:
    """One new-ROI infer (what 3D Slicer sends: the ROI, no clicks); the result file."""
    params = {"roi": [[box[0], box[2]], [box[1], box[3]], [0, 10_000]], "foreground": [],
              "background": []}
    r = c.post(f"/monailabel/infer/classic?session_id={sid}&output=image",
               data={"params": json.dumps(params)})
    assert r.status_code == 200, r.text
    return r.content


def _mask(data: bytes) -> np.ndarray:
    img: Any = nib.Nifti1Image.from_bytes(gzip.decompress(data))
    return np.asarray(img.dataobj)


def _statements(c: TestClient) -> AbstractContextManager[list[str]]:
    return recorded_statements(c.app.state.services.store.engine)  # type: ignore[attr-defined]


def test_the_result_is_built_while_the_version_is_flushed(tmp_path: Path, monkeypatch: Any
                                                          ) -> None:
    """The version file's fsync waits until the result file is written: it can only finish
    when the answer is built from the worker's labels during the flush (before, the answer
    was built after the ``done`` event from the version file read back). The answer still
    comes after the commit: the version it reports is current and its file is there."""
    need_shared_data()
    with _client(tmp_path) as c:
        sid = _session(c)
        _infer(c, sid, BOX)  # warm: the engine session
        svc = c.app.state.services  # type: ignore[attr-defined]
        built = threading.Event()
        armed = threading.Event()
        overlapped: list[bool] = []
        reads: list[Path] = []
        real_write, real_fsync, real_load = (ml_geometry.write_result, fsio.fsync_file,
                                             files.load_labels)

        def write(*a: Any, **kw: Any) -> Path:
            out = real_write(*a, **kw)
            built.set()
            return out

        def fsync(path: Any) -> None:
            if armed.is_set() and "versions" in str(path):
                overlapped.append(built.wait(10))  # old code: never set before the commit
            real_fsync(path)

        def load(path: Path) -> Any:
            reads.append(path)
            return real_load(path)

        monkeypatch.setattr(ml_geometry, "write_result", write)
        monkeypatch.setattr(fsio, "fsync_file", fsync)
        monkeypatch.setattr(files, "load_labels", load)
        armed.set()
        got = _mask(_infer(c, sid, BOX2))
        armed.clear()
        assert overlapped == [True], "the result file was not built during the version's fsync"
        assert reads == [], "the answer read the version file back"
        job_id = svc.store.list_jobs(LOCAL_ADMIN)[0].job_id
        labels, n = svc.store.labels(job_id, LOCAL_ADMIN)
        assert n == 2 and (svc.store.job_dir(job_id) / "versions" / "v0002.npz").is_file()
        assert got.shape == labels.shape and int(got.sum()) == int((labels == 1).sum()) > 0


def test_one_job_read_and_no_session_rewrite_per_infer(tmp_path: Path) -> None:
    """A new ROI on a session used a moment ago: the job record is read once on the API's
    path (the session check's read serves the infer), the session's row is not rewritten,
    and the object's label value is read alone (no object list with anchor planes)."""
    need_shared_data()
    with _client(tmp_path) as c:
        sid = _session(c)
        _infer(c, sid, BOX)
        with _statements(c) as seen:
            _infer(c, sid, BOX2)
        touches = [q for q in seen if q.startswith("UPDATE segloop_protocol_refs")]
        assert touches == [], touches
        job_reads = [q for q in seen if q.startswith("SELECT") and "FROM segloop_jobs " in q
                     and "segloop_tasks" not in q]
        assert len(job_reads) == 1, job_reads
        anchors = [q for q in seen if "FROM segloop_tasks" in q and "kind IN" in q]
        assert anchors == [], anchors


def test_no_slice_masks_are_built_that_nobody_follows(tmp_path: Path, monkeypatch: Any
                                                       ) -> None:
    """The request waits for its task's end only: its propagation builds no slice masks for
    progress events, unless a viewer follows the job (then it gets them as before)."""
    need_shared_data()
    with _client(tmp_path) as c:
        sid = _session(c)
        _infer(c, sid, BOX)
        built: list[int] = []
        real = progress.mask_runs

        def runs(mask: Any) -> list[int]:
            built.append(1)
            return real(mask)

        monkeypatch.setattr(progress, "mask_runs", runs)
        _infer(c, sid, BOX2)
        assert built == []
        bus = c.app.state.services.bus  # type: ignore[attr-defined]
        job_id = c.app.state.services.store.list_jobs(LOCAL_ADMIN)[0].job_id  # type: ignore[attr-defined]
        viewer = c.portal.call(bus.subscribe, job_id)  # type: ignore[union-attr]
        try:
            _infer(c, sid, BOX)
            assert len(built) > 5, "a viewer following the job lost its slice masks"
        finally:
            c.portal.call(viewer.close)  # type: ignore[union-attr]


def test_an_idle_session_is_still_touched(tmp_path: Path) -> None:
    """The last use of a session idle for longer than a tenth of its expiry (at most a
    minute) is recorded by the next infer, so a session in use never expires."""
    need_shared_data()
    with _client(tmp_path) as c:
        sid = _session(c)
        engine = c.app.state.services.store.engine  # type: ignore[attr-defined]
        old = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=2)
        with engine.begin() as conn:
            conn.execute(text("UPDATE segloop_protocol_refs SET touched = :t WHERE key = :k"),
                         {"t": old, "k": sid})
        _infer(c, sid, BOX)
        info = c.get(f"/monailabel/session/{sid}").json()
        assert info["last_access_ts"] > old.replace(tzinfo=dt.UTC).timestamp() + 60

