"""Distributed mode with real processes: Redis, a PostgreSQL job store and two `segloop worker`s.

The required check: a worker is SIGKILLed in the middle of a propagation and the job still
completes (retried on the other worker, or on the restarted one), and a restarted API reports it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from livertask import liver_slice_box
from realdata import SHARED_DATA, need_shared_data
from segloop.api import create_app
from segloop.config import load_settings
from segloop.engines import drive, get_engine
from segloop.io import load_volume
from segloop.jobs.store import JobStore
from segloop.types import Prompts

from .conftest import Workers, service_env

DATA = SHARED_DATA
CT = DATA / "totalseg" / "example_ct_sm.nii.gz"


@pytest.fixture(autouse=True)
def _plugin() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    import slow_engine_plugin  # noqa: F401  (registers slow-classic in this process too)


def _events(c: TestClient, jid: str, tid: str, on_event: Any = None) -> list[dict[str, Any]]:
    out = []
    with c.stream("GET", f"/api/v1/jobs/{jid}/events", params={"task_id": tid}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                ev = json.loads(line[6:])
                out.append(ev)
                if on_event is not None:
                    on_event(ev)
    return out


def test_worker_killed_mid_propagation(tmp_path: Path, workers: Workers, redis_url: str,
                                       database_url: str, home: Path) -> None:
    need_shared_data()
    settings = load_settings(None, **service_env(home, redis_url, database_url))
    z, box = liver_slice_box()
    killed: dict[str, Any] = {}
    store = JobStore(settings)
    try:
        with TestClient(create_app(settings)) as c:
            up = c.post("/api/v1/jobs", files={"file": ("ct.nii.gz", CT.read_bytes())})
            assert up.status_code == 201, up.text
            jid = up.json()["job_id"]
            t1 = c.post(f"/api/v1/jobs/{jid}/initial-mask",
                        json={"slice_index": z, "box": box}).json()["task_id"]
            ev = _events(c, jid, t1)  # pushed from a worker process through Redis
            assert ev[-1]["type"] == "done", (ev[-1], workers.logs())
            assert [e["type"] for e in ev][:2] == ["status", "started"] or ev[1]["type"] in (
                "queued", "started", "progress")

            t2 = c.post(f"/api/v1/jobs/{jid}/propagate",
                        json={"engine": "slow-classic"}).json()["task_id"]

            def kill_when_started(e: dict[str, Any]) -> None:
                if not killed and e.get("type") == "progress" and e.get("slices_done", 0) >= 3:
                    row = store.get_task(t2)
                    assert row is not None and row.worker
                    killed["pid"] = int(row.worker.rsplit(":", 1)[1])
                    killed["at"] = e["slices_done"]
                    workers.kill(killed["pid"])
                    killed["t"] = time.monotonic()
                    workers.start()  # the operator restarts it

            # the stream stays open across the kill; the API is then restarted mid-job
            seen: list[dict[str, Any]] = []
            with c.stream("GET", f"/api/v1/jobs/{jid}/events", params={"task_id": t2}) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        e = json.loads(line[6:])
                        seen.append(e)
                        kill_when_started(e)
                        if killed:
                            break
        assert killed, workers.logs()
        with TestClient(create_app(settings)) as c2:  # API restarted mid-job
            st = c2.get(f"/api/v1/jobs/{jid}/status").json()
            assert st["task"]["task_id"] == t2 and st["state"] in ("running", "queued")
            back: dict[str, float] = {}

            def restarted(e: dict[str, Any]) -> None:
                if e.get("type") == "started":
                    back.setdefault("t", time.monotonic())

            ev = _events(c2, jid, t2, restarted)
            assert ev[-1]["type"] == "done", (ev[-1], workers.logs())
            # recovery: kill -> the task runs again (stale_after_seconds 3 here; the reaper,
            # not the broker, requeues it: see docs/service.md)
            print(f"\nworker SIGKILL -> task running again after "
                  f"{back.get('t', time.monotonic()) - killed['t']:.1f} s, done after "
                  f"{time.monotonic() - killed['t']:.1f} s")
            final = c2.get(f"/api/v1/jobs/{jid}/tasks/{t2}").json()
            assert final["attempts"] == 2 and final["version"] == 2
            res = c2.get(f"/api/v1/jobs/{jid}/result")
            (tmp_path / "m.nii.gz").write_bytes(res.content)
        mask = np.asarray(nib.load(str(tmp_path / "m.nii.gz")).dataobj).astype(bool)
        sess = get_engine("classic").open(load_volume(CT))
        drive(sess.propagate(z, sess.segment_slice(z, Prompts.make(box))))
        assert np.array_equal(mask, sess.mask(1))  # the retried task gives the same answer
        assert len(store.list_versions(jid, _admin())) == 2  # no duplicate version
    finally:
        store.close()


def _admin() -> Any:
    from segloop.jobs.store import LOCAL_ADMIN

    return LOCAL_ADMIN


def test_two_workers_run_jobs_in_parallel(tmp_path: Path, workers: Workers, redis_url: str,
                                          database_url: str, home: Path) -> None:
    need_shared_data()
    settings = load_settings(None, **service_env(home, redis_url, database_url))
    z, box = liver_slice_box()
    with TestClient(create_app(settings)) as c:
        jobs = [c.post("/api/v1/jobs", files={"file": ("ct", CT.read_bytes())}).json()["job_id"]
                for _ in range(2)]
        tasks = []
        for jid in jobs:
            c.post(f"/api/v1/jobs/{jid}/initial-mask", json={"slice_index": z, "box": box})
            tasks.append(c.post(f"/api/v1/jobs/{jid}/propagate",
                                json={"engine": "slow-classic"}).json()["task_id"])
        t0 = time.monotonic()
        for jid, tid in zip(jobs, tasks, strict=True):
            assert _events(c, jid, tid)[-1]["type"] == "done", workers.logs()
        elapsed = time.monotonic() - t0
        store = JobStore(settings)
        ran_on = {store.get_task(t).worker for t in tasks}  # type: ignore[union-attr]
        store.close()
        assert len(ran_on) == 2, f"both propagations ran on {ran_on} ({elapsed:.1f} s)"
        active = c.get("/api/v1/system/jobs/active").json()
        assert active == []
        st = c.get("/api/v1/system/status").json()
        assert st["queue"] == "celery" and st["broker_queue_length"] == 0
