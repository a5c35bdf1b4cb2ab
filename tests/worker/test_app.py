"""The Celery app built by create_worker: reliability settings and the registered task."""

from __future__ import annotations

from pathlib import Path

from segloop.config import load_settings
from segloop.jobs.queue import TASK_NAME
from segloop.worker import create_worker


def test_worker_reliability_settings(tmp_path: Path) -> None:
    s = load_settings(None, home=tmp_path / "h", redis_url="redis://127.0.0.1:1/0",
                      visibility_timeout=1234)
    app = create_worker(s)
    conf = app.conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] == 1234
    assert conf.accept_content == ["json"]
    task = app.tasks[TASK_NAME]
    assert task.acks_late and task.reject_on_worker_lost
