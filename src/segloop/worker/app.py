"""Celery worker factory: the ``segloop.run_task`` task around the shared task runner.

Concurrency model: one :class:`~segloop.jobs.runner.Runtime` per worker process, built on
first use, so each engine (model weights) loads once per process and engine sessions are
cached across tasks. The default pool is ``threads`` with ``concurrency`` threads sharing that
one model; pin a worker to a GPU with ``CUDA_VISIBLE_DEVICES`` and run one worker per GPU
(docs/service.md). Reliability: late acknowledgement, prefetch 1 and reject-on-worker-lost
make the broker redeliver a task whose worker died; the runner's heartbeats and the reaper
(in every worker and in the API) requeue a task whose worker went silent, or fail it with a
reason after ``max_attempts``, and re-sends queued tasks the broker lost (after a Redis
restart: segloop.jobs.recovery); the task is idempotent (a duplicate delivery is skipped).
Never imports FastAPI.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from segloop.config import Settings
from segloop.jobs.events import RedisBus
from segloop.jobs.queue import TASK_NAME, make_celery, reap_once, send_task
from segloop.jobs.recovery import BrokerReconciler
from segloop.jobs.runner import RunOutcome, Runtime
from segloop.jobs.store import JobStore

__all__ = ["create_worker"]

log = logging.getLogger(__name__)


def create_worker(settings: Settings) -> Any:
    """A Celery app whose ``segloop.run_task(task_id)`` runs tasks with ``settings``."""
    app = make_celery(settings)
    state: dict[str, Any] = {}
    guard = threading.Lock()

    def runtime() -> Runtime:
        with guard:
            rt: Runtime | None = state.get("runtime")
            if rt is None or state.get("pid") != os.getpid():  # new process (prefork child)
                store = JobStore(settings)
                name = f"{socket.gethostname()}:{os.getpid()}"
                rt = Runtime(settings, store, RedisBus(settings.redis_url), worker=name)
                state["runtime"], state["pid"] = rt, os.getpid()
                _start_reaper(rt, app, settings)
            return rt

    @app.task(  # type: ignore[untyped-decorator]
        name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True,
              max_retries=None)
    def run_task(self: Any, task_id: str) -> str:
        outcome = runtime().run(task_id)
        if outcome == RunOutcome.BLOCKED:
            raise self.retry(countdown=0.2)
        return outcome

    from celery import signals

    @signals.worker_ready.connect(weak=False)  # type: ignore[untyped-decorator]
    def _ready(**_: Any) -> None:
        runtime()  # start the reaper as soon as the worker is up
        log.info("segloop worker ready", extra={"queue": "segloop"})

    app.conf.segloop_runtime = runtime
    return app


def _start_reaper(rt: Runtime, app: Any, settings: Settings) -> None:
    def resubmit(task_id: str) -> None:
        send_task(app, task_id)

    reconciler = BrokerReconciler(settings, rt.store, resubmit)

    def loop() -> None:
        stop = threading.Event()
        while not stop.wait(max(settings.heartbeat_seconds, 0.5)):
            reap_once(rt, resubmit, reconciler)

    threading.Thread(target=loop, name="segloop-reaper", daemon=True).start()
