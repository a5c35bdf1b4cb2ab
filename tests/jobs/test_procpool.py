"""Embedded engines in worker processes (``embedded_processes``): tasks run outside the
server's process, a job's tasks stay in one process, a killed process is replaced and its
task still completes, cancel and progress events cross the process boundary, and no worker
process outlives a killed server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from livertask import liver_slice_box, wait_task, watch_progress
from liveserver import wait_for_health
from realdata import SHARED_DATA, need_shared_data
from segloop.api import create_app
from segloop.config import Settings, load_settings
from segloop.jobs.store import JobStore

CT = SHARED_DATA / "totalseg" / "example_ct_sm.nii.gz"
WORKER_TESTS = Path(__file__).resolve().parents[1] / "worker"  # slow_engine_plugin
CLI = "import sys; from segloop.cli import main; sys.exit(main(sys.argv[1:]))"


def _settings(tmp_path: Path, **kw: Any) -> Settings:
    return load_settings(None, **{"home": tmp_path / "home", "json_logs": False,
                                  "default_engine": "classic", "heartbeat_seconds": 0.2,
                                  "stale_after_seconds": 1.0, "embedded_processes": 2,
                                  "plugins": ["slow_engine_plugin"], **kw})


@pytest.fixture
def slow_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    """The slow-classic engine, importable here and in the spawned worker processes."""
    need_shared_data()
    monkeypatch.syspath_prepend(str(WORKER_TESTS))


def _pid(s: Settings, tid: str) -> int:
    """The pid of the process that ran a task (its worker name ends in ``:pid``)."""
    store = JobStore(s)
    try:
        t = store.get_task(tid)
        assert t is not None and t.worker, t
        assert t.worker.startswith("segloop-proc"), f"ran in the API process ({t.worker})"
        return int(t.worker.rsplit(":", 1)[1])
    finally:
        store.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return False


def _upload(c: TestClient) -> str:
    r = c.post("/api/v1/jobs", files={"file": ("ct.nii.gz", CT.read_bytes())})
    assert r.status_code in (200, 201), r.text
    return str(r.json()["job_id"])


def _slow_propagation(c: TestClient) -> tuple[str, dict[str, Any]]:
    """Upload the liver CT, put the slow engine's key slice on it and start its propagation:
    the job id and the propagate answer (a task that runs for seconds in a worker process)."""
    z, box = liver_slice_box()
    jid = _upload(c)
    c.post(f"/api/v1/jobs/{jid}/initial-mask", json={"slice_index": z, "box": box,
                                                     "engine": "slow-classic"})
    t: dict[str, Any] = c.post(f"/api/v1/jobs/{jid}/propagate",
                               json={"engine": "slow-classic"}).json()
    return jid, t


def test_tasks_run_in_a_worker_process_with_job_affinity(tmp_path: Path,
                                                          slow_plugin: None) -> None:
    s = _settings(tmp_path)
    z, box = liver_slice_box()
    with TestClient(create_app(s)) as c:
        jid = _upload(c)
        tids = [c.post(f"/api/v1/jobs/{jid}/initial-mask",
                       json={"slice_index": z, "box": box}).json()["task_id"],
                c.post(f"/api/v1/jobs/{jid}/propagate").json()["task_id"],
                c.post(f"/api/v1/jobs/{jid}/refine", json={"slice_index": z + 2, "box": [
                    box[0] + 1, box[1] + 1, box[2] - 1, box[3] - 1]}).json()["task_id"]]
        for tid in tids:
            assert wait_task(c, jid, tid)["state"] == "succeeded"
        pids = {_pid(s, tid) for tid in tids}
        assert len(pids) == 1 and os.getpid() not in pids, pids  # one process, not ours
        first = pids.pop()
        os.kill(first, signal.SIGKILL)  # the job's process dies between tasks
        deadline = time.monotonic() + 10
        while _alive(first) and time.monotonic() < deadline:
            time.sleep(0.05)
        t = c.post(f"/api/v1/jobs/{jid}/refine", json={"slice_index": z - 2, "box": [
            box[0] + 2, box[1] + 2, box[2] - 2, box[3] - 2]}).json()["task_id"]
        done = wait_task(c, jid, t)
        assert done["state"] == "succeeded" and done["version"] == 4, done
        second = _pid(s, t)
        assert second not in (first, os.getpid()) and _alive(second)
        # a second job goes to the other process (fewest bound jobs), and stays there
        other = _upload(c)
        t2 = c.post(f"/api/v1/jobs/{other}/initial-mask",
                    json={"slice_index": z, "box": box}).json()["task_id"]
        assert wait_task(c, other, t2)["state"] == "succeeded"
        t3 = c.post(f"/api/v1/jobs/{other}/propagate").json()["task_id"]
        assert wait_task(c, other, t3)["state"] == "succeeded"
        assert _pid(s, t2) == _pid(s, t3) not in (second, os.getpid())


def test_a_task_whose_process_is_killed_still_completes(tmp_path: Path,
                                                       slow_plugin: None) -> None:
    s = _settings(tmp_path)
    with TestClient(create_app(s)) as c:
        jid, t = _slow_propagation(c)
        tid = t["task_id"]
        deadline = time.monotonic() + 30
        while c.get(f"/api/v1/jobs/{jid}/tasks/{tid}").json()["state"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        pid = _pid(s, tid)
        os.kill(pid, signal.SIGKILL)
        done = wait_task(c, jid, tid, timeout=90)
        assert done["state"] == "succeeded" and done["attempts"] == 2, done
        assert _pid(s, tid) != pid


def test_cancel_and_progress_cross_the_process_boundary(tmp_path: Path,
                                                        slow_plugin: None) -> None:
    s = _settings(tmp_path)
    with TestClient(create_app(s)) as c:
        jid, t = _slow_propagation(c)
        seen, th = watch_progress(c, jid, t["task_id"], 3)
        assert seen.wait(60), "no progress event came from the worker process"
        assert c.post(f"/api/v1/jobs/{jid}/cancel").json()["cancel_requested"] == 1
        th.join(30)
        done = wait_task(c, jid, t["task_id"])
        assert done["state"] == "cancelled" and "cancelled after" in done["error"], done
        assert _pid(s, t["task_id"]) != os.getpid()


def _free_port() -> int:
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return int(sk.getsockname()[1])


@pytest.mark.parametrize("how", ["kill", "terminate"])
def test_no_worker_process_outlives_the_server(tmp_path: Path, how: str) -> None:
    need_shared_data()
    home, port = tmp_path / "home", _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGLOOP_")}
    env.update(SEGLOOP_HOME=str(home), SEGLOOP_JSON_LOGS="false",
               SEGLOOP_DEFAULT_ENGINE="classic", SEGLOOP_EMBEDDED_PROCESSES="2")
    proc = subprocess.Popen([sys.executable, "-c", CLI, "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/api/v1"
    pids: set[int] = set()
    try:
        wait_for_health(f"http://127.0.0.1:{port}", proc, seconds=60)
        z, box = liver_slice_box()
        with httpx.Client(timeout=60) as h:
            for _ in range(3):  # three jobs: both slots are likely to start
                jid = h.post(f"{base}/jobs", files={"file": ("ct.nii.gz", CT.read_bytes())}
                             ).json()["job_id"]
                tid = h.post(f"{base}/jobs/{jid}/initial-mask",
                             json={"slice_index": z, "box": box}).json()["task_id"]
                deadline = time.monotonic() + 60
                while h.get(f"{base}/jobs/{jid}/tasks/{tid}").json()["state"] != "succeeded":
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
                pids.add(_pid(load_settings(None, home=home), tid))
        assert pids and proc.pid not in pids and all(_alive(p) for p in pids)
    finally:
        proc.kill() if how == "kill" else proc.terminate()
        proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if _alive(p)], "worker processes outlived the server"
