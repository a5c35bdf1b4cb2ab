"""A second embedded server on the same SEGLOOP_HOME refuses to start and leaves the first
one's live task alone (issue 9, item 8).

Before the home lock, the second server took the first one's running task for an orphan of a
dead server, requeued it and ran it again (a second attempt and an orphan version file).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .services import Server, events_until_end, tiny_volume

#: real servers, workers and Redis: tens of seconds (run with -m slow)
pytestmark = pytest.mark.slow


def test_second_embedded_server_on_same_home_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = {"home": str(home), "json_logs": False, "default_engine": "classic",
                "heartbeat_seconds": 0.5, "stale_after_seconds": 5.0,
                "plugins": ["slow_engine_plugin"]}
    first = Server(settings, tmp_path / "first.log")
    second: Server | None = None
    try:
        first.wait_ready()
        with first.client() as c:
            jid = c.post("/api/v1/jobs", files={"file": ("v.nii.gz", tiny_volume(0, 90))}
                         ).json()["job_id"]
            t1 = c.post(f"/api/v1/jobs/{jid}/initial-mask",
                        json={"slice_index": 40, "box": [6, 5, 15, 13]}).json()["task_id"]
            assert events_until_end(c, jid, t1)[-1]["type"] == "done"
            t2 = c.post(f"/api/v1/jobs/{jid}/propagate",
                        json={"engine": "slow-classic"}).json()["task_id"]
            deadline = time.monotonic() + 30
            while c.get(f"/api/v1/jobs/{jid}/tasks/{t2}").json()["state"] != "running":
                assert time.monotonic() < deadline, "the propagation never started"
                time.sleep(0.05)

            second = Server(settings, tmp_path / "second.log")
            rc = second.proc.wait(60)
            assert rc == 2, second.output()
            out = second.output()
            assert f"another segloop serve is using {home.resolve()} (pid {first.pid})" in out
            assert "Traceback" not in out

            ev = events_until_end(c, jid, t2)
            assert ev[-1]["type"] == "done", ev[-1]
            task = c.get(f"/api/v1/jobs/{jid}/tasks/{t2}").json()
            assert task["attempts"] == 1, task  # never taken over by the second server
            versions = c.get(f"/api/v1/jobs/{jid}/versions").json()
            assert [v["version"] for v in versions] == [1, 2]
        assert sorted(p.name for p in (home / "jobs" / jid / "versions").iterdir()) == [
            "v0001.npz", "v0002.npz"]
    finally:
        if second is not None:
            second.stop()
        first.stop()
    # the lock goes with the process: a new server starts on the same home
    again = Server(settings, tmp_path / "again.log")
    try:
        again.wait_ready()
    finally:
        again.stop()
