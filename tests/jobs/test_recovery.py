"""Fast checks of the Redis-trouble and home-lock parts, on real Redis and real files
(the end-to-end versions with killed processes are in tests/reliability, marked slow)."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from sqlalchemy import update

from segloop.config import Settings, load_settings
from segloop.jobs.db import TaskRow
from segloop.jobs.errors import HomeInUseError, QueueUnavailableError
from segloop.jobs.homelock import HomeLock
from segloop.jobs.queue import make_celery, send_task
from segloop.jobs.recovery import BrokerReconciler, broker_task_ids, discard_unsent
from segloop.jobs.store import LOCAL_ADMIN, JobStore


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    port = _free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            if client.ping():
                break
        except redis.ConnectionError:
            time.sleep(0.05)
    client.close()
    yield f"redis://127.0.0.1:{port}/0"
    proc.kill()
    proc.wait(10)


def _settings(tmp_path: Path, redis_url: str) -> Settings:
    return load_settings(None, home=tmp_path / "home", json_logs=False, queue="celery",
                         redis_url=redis_url, default_engine="classic")


def _job(store: JobStore, tmp_path: Path) -> str:
    arr = np.zeros((16, 12, 6), np.int16)
    arr[4:10, 3:9, 1:5] = 200
    up = tmp_path / "upload.nii"
    up.write_bytes(nib.Nifti1Image(arr, np.eye(4)).to_bytes())
    return store.create_job(up, "v.nii", LOCAL_ADMIN).job_id


def _task(store: JobStore, jid: str) -> str:
    t = store.create_task(jid, "initial-mask", {"slice_index": 2, "box": [4, 3, 9, 8]},
                          LOCAL_ADMIN, ["classic"])
    return t.task_id


def test_discard_unsent_removes_the_task_and_restores_last_task(tmp_path: Path) -> None:
    store = JobStore(load_settings(None, home=tmp_path / "home", json_logs=False))
    try:
        jid = _job(store, tmp_path)
        first, second = _task(store, jid), _task(store, jid)
        assert discard_unsent(store, second)
        assert store.get_task(second) is None
        status = store.job_status(jid, LOCAL_ADMIN)
        assert status.task is not None and status.task.task_id == first
        assert status.active_tasks == 1
        assert not discard_unsent(store, second)  # already gone
        with store.engine.begin() as conn:  # a task a worker already took is never discarded
            conn.execute(update(TaskRow).where(TaskRow.id == first).values(attempts=1))
        assert not discard_unsent(store, first)
    finally:
        store.close()


def test_send_task_while_redis_is_down_raises_queue_unavailable(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{_free_port()}/0"  # nothing listens there
    app = make_celery(_settings(tmp_path, url))
    t0 = time.monotonic()
    with pytest.raises(QueueUnavailableError, match="Redis"):
        send_task(app, "0b7e4a9e-8b7c-4a57-9d6e-2f1f3c3f9a10")
    assert time.monotonic() - t0 < 10


def test_reconciler_resends_only_the_queued_tasks_redis_lacks(tmp_path: Path,
                                                             redis_url: str) -> None:
    import redis

    settings = _settings(tmp_path, redis_url)
    store = JobStore(settings)
    app = make_celery(settings)
    client = redis.Redis.from_url(redis_url)
    try:
        jid = _job(store, tmp_path)
        kept, lost = _task(store, jid), _task(store, jid)
        old = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=1)
        with store.engine.begin() as conn:  # recorded a minute ago
            conn.execute(update(TaskRow).values(created=old))
        send_task(app, kept)  # `lost` never reached Redis (as after a restart)
        assert broker_task_ids(client, 60.0) == {kept}
        sent: list[str] = []
        rec = BrokerReconciler(settings, store, sent.append)
        assert rec.run() == [lost] and sent == [lost]
        assert rec.run() == []  # another round within the lock's lifetime does nothing
        rec.close()
    finally:
        client.close()
        store.close()


def test_home_lock_names_the_holder_and_is_released(tmp_path: Path) -> None:
    import os

    first, second = HomeLock(tmp_path / "home"), HomeLock(tmp_path / "home")
    first.acquire()
    with pytest.raises(HomeInUseError, match=rf"another segloop serve is using .*home "
                                             rf"\(pid {os.getpid()}\)"):
        second.acquire()
    first.release()
    second.acquire()
    second.release()


def test_embedded_start_leaves_live_running_tasks_to_their_worker(tmp_path: Path) -> None:
    """A running task with a fresh heartbeat (a live worker sharing the job store) is not
    taken at start; once its heartbeat is stale the reaper takes it over."""
    from fastapi.testclient import TestClient

    from segloop.api import create_app

    s = load_settings(None, home=tmp_path / "home", json_logs=False, default_engine="classic",
                      heartbeat_seconds=0.2, stale_after_seconds=1.5)
    store = JobStore(s)
    jid = _job(store, tmp_path)
    tid = _task(store, jid)
    with store.engine.begin() as conn:
        conn.execute(update(TaskRow).where(TaskRow.id == tid).values(
            state="running", attempts=1, worker="gpu-host:4242",
            heartbeat=dt.datetime.now(dt.UTC).replace(tzinfo=None)))
    store.close()
    with TestClient(create_app(s)) as c:
        time.sleep(0.5)
        t = c.get(f"/api/v1/jobs/{jid}/tasks/{tid}").json()
        assert (t["state"], t["attempts"]) == ("running", 1)  # not taken from a live worker
        deadline = time.monotonic() + 20
        while t["state"] != "succeeded":
            assert time.monotonic() < deadline, t
            time.sleep(0.1)
            t = c.get(f"/api/v1/jobs/{jid}/tasks/{tid}").json()
        assert t["attempts"] == 2  # taken over by the reaper once the heartbeat went stale
