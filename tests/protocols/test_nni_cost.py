"""nnInteractive's first box (the requests its client sends, in process): the changed-box diff
is made from the label map the worker computed, while the version is flushed to disk, not
from the version file read back after the commit; it is the same diff."""

from __future__ import annotations

import json
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import text

from realdata import SHARED_DATA, need_shared_data
from segloop import fsio
from segloop.api.app import create_app
from segloop.config import load_settings
from segloop.io import load_volume
from segloop.jobs import files
from segloop.jobs.store import LOCAL_ADMIN
from segloop.protocols import mount, nni_array
from segloop.protocols.nni_lease import Lease, lease_key
from segloop.protocols.refs import RefKind
from sqlstatements import recorded_statements

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


def _client(tmp_path: Path) -> TestClient:
    s = load_settings(None, home=tmp_path / "home", json_logs=False, default_engine="classic")
    app = create_app(s)
    mount(app)
    return TestClient(app)


def _statements(c: TestClient) -> AbstractContextManager[list[str]]:
    return recorded_statements(c.app.state.services.store.engine)  # type: ignore[attr-defined]


def test_the_first_box_reads_no_labels_for_its_all_zero_before_buffer(
        tmp_path: Path, monkeypatch: Any) -> None:
    """A job without a version has an all-zero buffer: the first box builds it without
    reading labels or version rows; a later box (the job has versions) still compares with
    the mask last answered, and the diff is right when the kept one is gone."""
    need_shared_data()
    with _client(tmp_path) as c:
        _box(c, _lease(c))  # warm
        head = _lease(c)
        calls: list[Any] = []
        real = Lease.buffer_mask

        def buffer_mask(self: Lease, version: int | None = None) -> Any:
            calls.append(version)
            return real(self, version)

        monkeypatch.setattr(Lease, "buffer_mask", buffer_mask)
        with _statements(c) as seen:
            bbox, values = _box(c, head)
        assert calls == [], "the first box read labels for its all-zero 'before' buffer"
        assert values.sum() > 0 and all(hi - lo > 1 for lo, hi in bbox)
        # a second lease's box: the first lease's kept mask is not this one's
        c.app.state.nninteractive._masks.clear()  # type: ignore[attr-defined]
        b = BOX
        r = c.post("/nninteractive/add_point_interaction", headers=head, json={
            "coordinates": [(b[0] + b[2]) // 2, (b[1] + b[3]) // 2, Z],
            "include_interaction": False, "run_prediction": True})
        assert r.status_code == 200, r.text
        assert calls == [1], "a later box compares with the stored version it started from"
        versions = [q for q in seen if "FROM segloop_mask_versions" in q]
        assert len(versions) <= 1, versions  # the worker's own read at most


def test_the_first_box_takes_one_thread_pool_hop_before_the_submit(
        tmp_path: Path, monkeypatch: Any) -> None:
    """The lease lookup, then one hop for the job check, the steps and the 'before' buffer
    (before, the job check was a hop of its own)."""
    need_shared_data()
    from segloop.protocols import nni_state, nninteractive

    with _client(tmp_path) as c:
        _box(c, _lease(c))
        head = _lease(c)
        hops: list[str] = []
        real = nninteractive.run_in_threadpool

        async def counted(fn: Any, *a: Any, **kw: Any) -> Any:
            hops.append(getattr(fn, "__name__", repr(fn)))
            return await real(fn, *a, **kw)

        monkeypatch.setattr(nninteractive, "run_in_threadpool", counted)
        monkeypatch.setattr(nni_state, "run_in_threadpool", counted)  # the lease lookup
        _box(c, head)
        assert len(hops) == 2, hops


def test_the_lease_row_is_written_once_after_the_task_is_queued(tmp_path: Path) -> None:
    """The lease's state (started, nothing pending) is written in the hop that queues the
    task, after it, so the worker does not wait for it; it is still written, once."""
    need_shared_data()
    with _client(tmp_path) as c:
        _box(c, _lease(c))
        head = _lease(c)
        with _statements(c) as seen:
            _box(c, head)
        writes = [i for i, q in enumerate(seen) if q.startswith("UPDATE segloop_protocol_refs")]
        queued = [i for i, q in enumerate(seen) if q.startswith("INSERT INTO segloop_tasks")]
        assert len(writes) == 1 and len(queued) == 1, (writes, queued)
        assert writes[0] > queued[0], "the lease row was written before the task was queued"
        st = c.app.state.nninteractive  # type: ignore[attr-defined]
        ref = st.refs.get(RefKind.NNI_LEASE, lease_key(head["X-Lease-Token"]))
        assert ref.data["started"] is True and ref.data["pending"] == []
        # so the next click is a refinement of the same job (its state is durable)
        b = BOX
        r = c.post("/nninteractive/add_point_interaction", headers=head, json={
            "coordinates": [(b[0] + b[2]) // 2, (b[1] + b[3]) // 2, Z],
            "include_interaction": False, "run_prediction": True})
        assert r.status_code == 200, r.text
        engine = c.app.state.services.store.engine  # type: ignore[attr-defined]
        with engine.connect() as conn:
            kinds = sorted(conn.execute(text("SELECT kind FROM segloop_tasks WHERE job_id = :j"),
                                        {"j": ref.job_id}).scalars())
        assert kinds == ["refine", "segment"], kinds


def test_the_answer_is_packed_while_the_version_is_flushed(tmp_path: Path,
                                                           monkeypatch: Any) -> None:
    """The packed values of the first box's answer are made before the version's fsync
    ends (before, they were packed on the event loop after the commit)."""
    need_shared_data()
    with _client(tmp_path) as c:
        _box(c, _lease(c))
        head = _lease(c)
        packed = threading.Event()
        overlapped: list[bool] = []
        real_pack, real_fsync = nni_array.pack, fsio.fsync_file

        def pack(arr: Any) -> bytes:
            out = real_pack(arr)
            packed.set()
            return out

        def fsync(path: Any) -> None:
            if "versions" in str(path):
                overlapped.append(packed.wait(5))
            real_fsync(path)

        monkeypatch.setattr(nni_array, "pack", pack)
        monkeypatch.setattr(fsio, "fsync_file", fsync)
        bbox, values = _box(c, head)
        assert overlapped == [True], "the answer was packed after the version's fsync"
        assert values.sum() > 0 and all(hi - lo > 1 for lo, hi in bbox)


def test_the_labels_are_offered_after_the_version_rows_while_the_file_is_flushed(
        tmp_path: Path) -> None:
    """The worker offers its label map to the waiting request once the version's rows are
    written (the build then runs while the worker waits for the fsync, not while it encodes
    the map and writes the rows; before, the offer came ahead of both), and before the
    commit (so the answer is still built during the flush)."""
    need_shared_data()
    from segloop.jobs.handoff import LabelHandoff

    with _client(tmp_path) as c:
        _box(c, _lease(c))
        head = _lease(c)
        hub: LabelHandoff = c.app.state.services.runtime.handoff  # type: ignore[attr-defined]
        real = hub.offer
        at_offer: list[list[str]] = []
        with _statements(c) as seen:
            def offer(job_id: str, task_id: str, labels: Any) -> None:
                at_offer.append(list(seen))
                real(job_id, task_id, labels)

            hub.offer = offer  # type: ignore[method-assign]
            try:
                bbox, values = _box(c, head)
            finally:
                del hub.offer
        assert len(at_offer) == 1
        before = at_offer[0]
        assert any(q.startswith("INSERT INTO segloop_mask_versions") for q in before), \
            "the labels were offered before the version's rows were written"
        assert any(q.startswith("UPDATE segloop_tasks") and "state" in q
                   for q in before[-3:]), before[-3:]
        assert values.sum() > 0 and all(hi - lo > 1 for lo, hi in bbox)
