"""Submitting a task to Celery sends it without reading the job store again: the API passes
the job id it has just recorded (the affinity route needs it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis
from sqlalchemy import event

from livertask import liver_slice_box
from realdata import SHARED_DATA, need_shared_data
from segloop.config import load_settings
from segloop.jobs.events import LocalBus
from segloop.jobs.queue import CeleryQueue
from segloop.jobs.runner import Runtime
from segloop.jobs.store import LOCAL_ADMIN, JobStore


def test_submit_with_the_job_id_reads_nothing(tmp_path: Path, redis_url: str) -> None:
    need_shared_data()
    s = load_settings(None, home=tmp_path / "home", json_logs=False, default_engine="classic",
                      queue="celery", redis_url=redis_url)
    s.ensure_dirs()
    upload = s.tmp_dir / "upload-test"
    upload.write_bytes((SHARED_DATA / "totalseg" / "example_ct_sm.nii.gz").read_bytes())
    store = JobStore(s)
    job = store.create_job(upload, "ct.nii.gz", LOCAL_ADMIN)
    z, box = liver_slice_box()
    t = store.create_task(job.job_id, "initial-mask", {"slice_index": z, "box": box},
                          LOCAL_ADMIN, ["classic"])
    rt = Runtime(s, store, LocalBus(), "api")
    q = CeleryQueue(s, rt)
    seen: list[str] = []

    def hook(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    client = redis.Redis.from_url(redis_url)
    try:
        before = client.llen("segloop")
        event.listen(store.engine, "before_cursor_execute", hook)
        q.submit(t.task_id, t.job_id)
        event.remove(store.engine, "before_cursor_execute", hook)
        assert seen == []
        assert client.llen("segloop") == before + 1  # no worker holds the job: shared queue
    finally:
        client.close()
        q.close()
        rt.close()
        store.close()
