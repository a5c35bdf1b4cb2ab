"""Task runner and job store: restarts lose nothing, duplicates are harmless, crashes are reaped."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import nibabel as nib
import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import update

from livertask import liver_slice_box, wait_task, watch_progress
from realdata import SHARED_DATA, need_shared_data
from segloop.api import create_app
from segloop.config import Settings, load_settings
from segloop.engines import register_engine
from segloop.engines.classic import ClassicEngine, ClassicSession
from segloop.jobs.db import TaskRow
from segloop.jobs.events import LocalBus
from segloop.jobs.runner import Runtime
from segloop.jobs.store import LOCAL_ADMIN, JobStore
from segloop.types import SliceResult

DATA = SHARED_DATA
CT = DATA / "totalseg" / "example_ct_sm.nii.gz"


def _settings(tmp_path: Path, **kw: Any) -> Settings:
    return load_settings(None, **{"home": tmp_path / "home", "json_logs": False,
                                  "default_engine": "classic", "heartbeat_seconds": 0.2,
                                  "stale_after_seconds": 1.0, **kw})


def _need() -> None:
    need_shared_data()


class SlowSession(ClassicSession):
    """Classic, 50 ms per propagated slice (to cancel / kill mid-way)."""

    def propagate(self, z: int, mask2d: Any = None, object_id: int = 1) -> Iterator[SliceResult]:
        for r in super().propagate(z, mask2d, object_id):
            time.sleep(0.05)
            yield r


class SlowEngine(ClassicEngine):
    name: ClassVar[str] = "slow-classic"

    def open(self, volume: Any) -> SlowSession:
        return SlowSession(volume)


def test_restart_keeps_everything(tmp_path: Path) -> None:
    """A new server process on the same home sees versions and resumes with replayed sessions."""
    _need()
    s = _settings(tmp_path)
    z, box = liver_slice_box()
    with TestClient(create_app(s)) as c:
        jid = c.post("/api/v1/jobs", files={"file": ("a", CT.read_bytes())}).json()["job_id"]
        t1 = c.post(f"/api/v1/jobs/{jid}/initial-mask", json={"slice_index": z, "box": box}).json()
        t2 = c.post(f"/api/v1/jobs/{jid}/propagate").json()
        assert wait_task(c, jid, t2["task_id"])["version"] == 2
        assert wait_task(c, jid, t1["task_id"])["version"] == 1  # ran in submission order
        ref = c.get(f"/api/v1/jobs/{jid}/result").content
    with TestClient(create_app(s)) as c:  # "restart": cold session cache
        assert c.get(f"/api/v1/jobs/{jid}/status").json()["current_version"] == 2
        assert c.get(f"/api/v1/jobs/{jid}/result").content == ref
        t3 = c.post(f"/api/v1/jobs/{jid}/refine", json={"slice_index": z - 5, "box": [
            box[0], box[1], box[2] - 5, box[3] - 5]}).json()
        assert wait_task(c, jid, t3["task_id"])["state"] == "succeeded"
        hot = c.get(f"/api/v1/jobs/{jid}/result").content
    # the same refine on a session that never left memory gives the same mask
    s2 = _settings(tmp_path / "b")
    with TestClient(create_app(s2)) as c:
        j2 = c.post("/api/v1/jobs", files={"file": ("a", CT.read_bytes())}).json()["job_id"]
        c.post(f"/api/v1/jobs/{j2}/initial-mask", json={"slice_index": z, "box": box})
        c.post(f"/api/v1/jobs/{j2}/propagate")
        t = c.post(f"/api/v1/jobs/{j2}/refine", json={"slice_index": z - 5, "box": [
            box[0], box[1], box[2] - 5, box[3] - 5]}).json()
        wait_task(c, j2, t["task_id"])
        import gzip

        a = nib.Nifti1Image.from_bytes(gzip.decompress(hot)).get_fdata()
        b = nib.Nifti1Image.from_bytes(gzip.decompress(
            c.get(f"/api/v1/jobs/{j2}/result").content)).get_fdata()
        assert np.array_equal(a, b)


def test_unfinished_tasks_resume_after_restart(tmp_path: Path) -> None:
    _need()
    s = _settings(tmp_path)
    z, box = liver_slice_box()
    store = JobStore(s)
    job = store.create_job(_copy(CT, s), "ct.nii.gz", LOCAL_ADMIN)
    t = store.create_task(job.job_id, "initial-mask", {"slice_index": z, "box": box},
                          LOCAL_ADMIN, ["classic"])
    # a previous server died while running it
    with store.sessions.begin() as ses:
        ses.execute(update(TaskRow).where(TaskRow.id == t.task_id).values(
            state="running", attempts=1, heartbeat=dt.datetime(2000, 1, 1)))
    store.close()
    with TestClient(create_app(s)) as c:
        done = wait_task(c, job.job_id, t.task_id)
        assert done["state"] == "succeeded" and done["attempts"] == 2


def _copy(src: Path, s: Settings) -> Path:
    s.ensure_dirs()
    p = s.tmp_dir / "upload-test"
    p.write_bytes(src.read_bytes())
    return p


def test_claim_is_exclusive_and_idempotent(tmp_path: Path) -> None:
    _need()
    s = _settings(tmp_path)
    z, box = liver_slice_box()
    store = JobStore(s)
    job = store.create_job(_copy(CT, s), "ct", LOCAL_ADMIN)
    t = store.create_task(job.job_id, "initial-mask", {"slice_index": z, "box": box},
                          LOCAL_ADMIN, ["classic"])
    rt = Runtime(s, store, LocalBus(), "w1")
    assert rt.run(t.task_id) == "done"
    assert rt.run(t.task_id) == "skipped"  # a redelivered duplicate does nothing
    assert len(store.list_versions(job.job_id, LOCAL_ADMIN)) == 1
    # a slower duplicate that then fails cannot turn a success into a failure
    store.finish_task(t.task_id, "failed", "late duplicate")
    assert store.get_task(t.task_id).state == "succeeded"  # type: ignore[union-attr]
    # a live claim is not stolen; a stale one is
    t2 = store.create_task(job.job_id, "propagate", {}, LOCAL_ADMIN, ["classic"])
    assert store.claim(t2.task_id, "w1")[1] is not None
    assert store.claim(t2.task_id, "w2")[1] is None
    time.sleep(1.1)
    assert store.claim(t2.task_id, "w2")[1] is not None
    store.close()


def test_reaper_requeues_then_fails(tmp_path: Path) -> None:
    _need()
    s = _settings(tmp_path, max_attempts=2)
    z, box = liver_slice_box()
    store = JobStore(s)
    job = store.create_job(_copy(CT, s), "ct", LOCAL_ADMIN)
    t = store.create_task(job.job_id, "initial-mask", {"slice_index": z, "box": box},
                          LOCAL_ADMIN, ["classic"])
    rt = Runtime(s, store, LocalBus(), "w1")
    resubmitted: list[str] = []
    assert store.claim(t.task_id, "dead-worker")[1] is not None
    time.sleep(1.1)
    assert rt.reap(resubmitted.append) == [t.task_id]
    assert resubmitted == [t.task_id]
    assert store.get_task(t.task_id).state == "queued"  # type: ignore[union-attr]
    assert store.claim(t.task_id, "dead-again")[1] is not None
    time.sleep(1.1)
    rt.reap(resubmitted.append)
    row = store.get_task(t.task_id)
    assert row is not None and row.state == "failed"
    assert "stopped reporting" in (row.error or "") and "2 attempt" in (row.error or "")
    store.close()


def test_cancel_mid_propagation(tmp_path: Path) -> None:
    _need()
    register_engine("slow-classic", SlowEngine)
    s = _settings(tmp_path)
    z, box = liver_slice_box()
    with TestClient(create_app(s)) as c:
        jid = c.post("/api/v1/jobs", files={"file": ("a", CT.read_bytes())}).json()["job_id"]
        c.post(f"/api/v1/jobs/{jid}/initial-mask", json={"slice_index": z, "box": box,
                                                         "engine": "slow-classic"})
        t = c.post(f"/api/v1/jobs/{jid}/propagate", json={"engine": "slow-classic"}).json()
        seen, th = watch_progress(c, jid, t["task_id"], 3)
        assert seen.wait(20)
        assert c.post(f"/api/v1/jobs/{jid}/cancel").json()["cancel_requested"] == 1
        th.join(20)
        done = wait_task(c, jid, t["task_id"])
        assert done["state"] == "cancelled" and "cancelled after" in done["error"]
        assert c.get(f"/api/v1/jobs/{jid}/status").json()["current_version"] == 1


def test_model_reload_drops_engines_and_sessions(tmp_path: Path) -> None:
    _need()
    s = _settings(tmp_path)
    z, box = liver_slice_box()
    store = JobStore(s)
    job = store.create_job(_copy(CT, s), "ct", LOCAL_ADMIN)
    rt = Runtime(s, store, LocalBus(), "w1")
    t = store.create_task(job.job_id, "initial-mask", {"slice_index": z, "box": box},
                          LOCAL_ADMIN, ["classic"])
    rt.run(t.task_id)
    assert len(rt.cache) == 1 and rt.loaded_engines == {"classic"}
    from segloop.engines import get_engine

    before = get_engine("classic")
    store.set_kv("model_generation", "7")  # what POST /system/model/reload does
    t = store.create_task(job.job_id, "propagate", {}, LOCAL_ADMIN, ["classic"])
    rt.run(t.task_id)
    assert get_engine("classic") is not before  # a fresh engine instance (weights reloaded)
    assert store.get_task(t.task_id).state == "succeeded"  # type: ignore[union-attr]
    store.close()


def test_cleanup_keeps_reviewed(tmp_path: Path) -> None:
    _need()
    s = _settings(tmp_path)
    z, box = liver_slice_box()
    store = JobStore(s)
    jobs = [store.create_job(_copy(CT, s), "ct", LOCAL_ADMIN).job_id for _ in range(2)]
    rt = Runtime(s, store, LocalBus(), "w1")
    for jid in jobs:
        rt.run(store.create_task(jid, "initial-mask", {"slice_index": z, "box": box},
                                 LOCAL_ADMIN, ["classic"]).task_id)
    store.review(jobs[0], LOCAL_ADMIN, None)
    kept = store.cleanup(LOCAL_ADMIN, older_than_days=1)
    assert kept.deleted == []  # nothing idle for a day yet
    out = store.cleanup(LOCAL_ADMIN, older_than_days=0)
    assert out.deleted == [jobs[1]] and out.kept_reviewed == [jobs[0]]
    assert not store.job_dir(jobs[1]).exists() and store.job_dir(jobs[0]).exists()
    out = store.cleanup(LOCAL_ADMIN, older_than_days=0, include_reviewed=True)
    assert out.deleted == [jobs[0]]
    assert (s.datastore_dir / "manifest.csv").exists()  # reviewed copies stay in the datastore
    assert any(a.action == "cleanup" for a in store.audit_log())
    store.close()


def test_session_behind_catches_up_with_missed_steps(tmp_path: Path) -> None:
    """Two workers alternating on one job: each catches up on the steps the other ran (no
    reopen, no full replay) and ends exactly where a worker that saw every step is."""
    _need()
    s = _settings(tmp_path)
    z, box = liver_slice_box()
    store = JobStore(s)
    jid = store.create_job(_copy(CT, s), "ct", LOCAL_ADMIN).job_id
    a, b = Runtime(s, store, LocalBus(), "a"), Runtime(s, store, LocalBus(), "b")
    opened: list[str] = []
    applied: list[str] = []
    for rt in (a, b):
        real_open, real_apply = rt._open, rt._apply

        def spy_open(*args: Any, _o: Any = real_open, _rt: Runtime = rt) -> Any:
            opened.append(_rt.worker)
            return _o(*args)

        def spy_apply(sess: Any, job_id: str, op: dict[str, Any], *args: Any,
                      _a: Any = real_apply, _rt: Runtime = rt) -> None:
            applied.append(f"{_rt.worker}:{op['op']}")
            _a(sess, job_id, op, *args)

        rt._open = spy_open  # type: ignore[method-assign]
        rt._apply = spy_apply  # type: ignore[method-assign]

    def task(kind: str, **params: Any) -> str:
        return str(store.create_task(jid, kind, params, LOCAL_ADMIN, ["classic"]).task_id)

    assert a.run(task("initial-mask", slice_index=z, box=box)) == "done"
    assert b.run(task("propagate")) == "done"  # b opens and replays a's step
    assert a.run(task("refine", slice_index=z - 3, box=[box[0], box[1], box[2] - 4,
                                                       box[3] - 4])) == "done"
    assert opened == ["a", "b"]  # a caught up on b's propagation instead of reopening
    assert applied == ["a:initial-mask", "b:initial-mask", "b:propagate", "a:propagate",
                       "a:refine"]
    labels, n = store.labels(jid, LOCAL_ADMIN)
    assert n == 3
    # a fresh worker replaying all three steps gets the same mask
    c = Runtime(s, store, LocalBus(), "c")
    v = store.version_row(jid)
    assert v is not None and v.replay[0] == {"op": "base", "version": 2}  # a delta, not the
    assert len(v.replay) == 2  # whole history: a task's cost does not grow with the job's age
    steps, _ = c.steps(jid, v)
    assert [op["op"] for op in steps] == ["initial-mask", "propagate", "refine"]
    sess = c.session_for(jid, None, "classic", v)
    assert np.array_equal(c.compose(sess, labels.shape, {1: 1}), labels)
    # after an undo the cached session is not a prefix any more: rebuilt from scratch
    store.move_current(jid, LOCAL_ADMIN, "undo")
    assert a.run(task("refine", slice_index=z + 2, box=box)) == "done"
    assert opened == ["a", "b", "a"]
    store.close()
