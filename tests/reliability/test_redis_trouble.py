"""Celery jobs survive Redis trouble (issue 9, item 5): a real redis-server (own port, with and
without AOF persistence) is SIGKILLed in the middle of a propagation and restarted.

Before: a submit while Redis was down answered 500 after committing a ``queued`` task that was
never sent, so every later task of that job waited behind it for good; and a restart of a Redis
without persistence lost the queued messages, whose tasks stayed ``queued`` forever. Now the
submit answers 503 and records nothing, and the reconciler re-sends what the broker lost; no
task runs twice.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from pgschema import database

from .services import Redis, Server, Worker, tiny_volume, wait_task_end

#: real servers, workers and Redis: tens of seconds (run with -m slow)
pytestmark = pytest.mark.slow


def _task(c: httpx.Client, jid: str, tid: str) -> dict[str, Any]:
    return dict(c.get(f"/api/v1/jobs/{jid}/tasks/{tid}").json())


def _upload(c: httpx.Client, seed: int, depth: int) -> str:
    r = c.post("/api/v1/jobs", files={"file": (f"v{seed}.nii.gz", tiny_volume(seed, depth))})
    assert r.status_code == 201, r.text
    return str(r.json()["job_id"])


def _mask(c: httpx.Client, jid: str, z: int) -> str:
    r = c.post(f"/api/v1/jobs/{jid}/initial-mask", json={"slice_index": z, "box": [6, 5, 15, 13]})
    assert r.status_code == 202, r.text
    return str(r.json()["task_id"])


@pytest.mark.parametrize(("aof", "db"), [(False, "sqlite"), (True, "sqlite"),
                                         (False, "postgresql")],
                         ids=["no-persistence", "aof", "no-persistence-postgresql"])
def test_redis_killed_and_restarted_mid_job(tmp_path: Path, aof: bool, db: str) -> None:
    with database(db, tmp_path) as url:
        _redis_killed_and_restarted(tmp_path, aof, url)


def _redis_killed_and_restarted(tmp_path: Path, aof: bool, database_url: str) -> None:
    redis = Redis(tmp_path / "redis", aof=aof)
    redis.start()
    settings = {"home": str(tmp_path / "home"), "json_logs": False, "queue": "celery",
                "redis_url": redis.url, "database_url": database_url,
                "default_engine": "classic", "plugins": ["slow_engine_plugin"]}
    worker = Worker(settings, tmp_path / "worker.log")
    server = Server(settings, tmp_path / "serve.log")

    def logs() -> str:
        return f"--- worker\n{worker.output()}\n--- serve\n{server.output()}"

    try:
        server.wait_ready()
        with server.client() as c:
            a, b = _upload(c, 0, 120), _upload(c, 1, 8)
            assert wait_task_end(c, a, _mask(c, a, 60))["state"] == "succeeded", logs()
            ta = c.post(f"/api/v1/jobs/{a}/propagate", json={"engine": "slow-classic"}
                        ).json()["task_id"]
            deadline = time.monotonic() + 60
            while _task(c, a, ta)["slices_done"] < 3:
                assert time.monotonic() < deadline, logs()
                time.sleep(0.05)
            tb = _mask(c, b, 4)  # waits in Redis behind the propagation (one worker thread)
            time.sleep(0.3)
            assert _task(c, b, tb)["state"] == "queued"

            redis.kill()
            t0 = time.monotonic()
            r = c.post(f"/api/v1/jobs/{b}/initial-mask",
                       json={"slice_index": 5, "box": [6, 5, 15, 13]})
            took = time.monotonic() - t0
            assert r.status_code == 503, r.text
            assert "Redis" in r.json()["detail"] and "Traceback" not in r.text
            print(f"\nsubmit with Redis down: {r.status_code} in {took:.1f} s")
            status = c.get(f"/api/v1/jobs/{b}/status").json()
            assert status["active_tasks"] == 1 and status["task"]["task_id"] == tb, status

            time.sleep(1.0)
            redis.start()  # same port and folder: with AOF it reloads its data
            t1 = time.monotonic()
            done_a = wait_task_end(c, a, ta, timeout=90)
            done_b = wait_task_end(c, b, tb, timeout=90)
            print(f"after the restart: propagation {done_a['state']}, queued task "
                  f"{done_b['state']} {time.monotonic() - t1:.1f} s later")
            assert done_a["state"] == "succeeded", (done_a, logs())
            assert done_b["state"] == "succeeded", (done_b, logs())
            assert done_a["attempts"] == 1 and done_b["attempts"] == 1  # nothing ran twice
            # the job is not wedged: a new task after the restart runs
            tc = _mask(c, b, 5)
            assert wait_task_end(c, b, tc, timeout=60)["state"] == "succeeded", logs()
            versions = c.get(f"/api/v1/jobs/{b}/versions").json()
            assert [v["version"] for v in versions] == [1, 2]
    finally:
        server.stop()
        worker.stop()
        redis.stop()
