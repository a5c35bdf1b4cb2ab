"""Celery job affinity with two real `segloop worker` processes: a job's consecutive tasks run
on the worker that cached its session; when that worker is killed, the next task still
completes on the other one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from livertask import liver_slice_box, wait_task
from realdata import SHARED_DATA, need_shared_data
from segloop.api import create_app
from segloop.config import Settings, load_settings
from segloop.jobs.store import JobStore

from .conftest import Workers, service_env

CT = SHARED_DATA / "totalseg" / "example_ct_sm.nii.gz"


@pytest.fixture(autouse=True)
def _plugin() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    import slow_engine_plugin  # noqa: F401  (registers slow-classic in this process too)


def _worker(s: Settings, tid: str) -> str:
    store = JobStore(s)
    try:
        t = store.get_task(tid)
        assert t is not None and t.worker, t
        return str(t.worker)
    finally:
        store.close()


def test_a_jobs_tasks_follow_its_session_and_survive_its_worker(
        workers: Workers, redis_url: str, database_url: str, home: Path) -> None:
    need_shared_data()
    s = load_settings(None, **service_env(home, redis_url, database_url))
    z, box = liver_slice_box()
    with TestClient(create_app(s)) as c:
        jid = c.post("/api/v1/jobs", files={"file": ("ct.nii.gz", CT.read_bytes())}
                     ).json()["job_id"]
        ran: list[str] = []
        for i in range(6):  # one after the other: both workers are idle at every submit
            body = {"slice_index": z, "box": [box[0] + i % 2, box[1], box[2], box[3]]}
            tid = c.post(f"/api/v1/jobs/{jid}/refine" if i else
                         f"/api/v1/jobs/{jid}/initial-mask", json=body).json()["task_id"]
            assert wait_task(c, jid, tid)["state"] == "succeeded", workers.logs()
            ran.append(_worker(s, tid))
        # without affinity two idle workers share the queue and alternate
        assert len(set(ran)) == 1, ran
        pid = int(ran[0].rsplit(":", 1)[1])
        workers.kill(pid)
        tid = c.post(f"/api/v1/jobs/{jid}/refine", json={"slice_index": z, "box": box}
                     ).json()["task_id"]
        done = wait_task(c, jid, tid, timeout=90)
        assert done["state"] == "succeeded" and done["version"] == 7, (done, workers.logs())
        after = _worker(s, tid)
        assert after != ran[0]
        # the job is now bound to the worker that took over
        tid = c.post(f"/api/v1/jobs/{jid}/refine", json={"slice_index": z, "box": box}
                     ).json()["task_id"]
        assert wait_task(c, jid, tid)["state"] == "succeeded"
        assert _worker(s, tid) == after
