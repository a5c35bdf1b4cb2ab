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
Job affinity (segloop.jobs.affinity): each worker also consumes its own queue
``segloop.w.<node name>``, keeps it announced as live, and records job -> that queue when
each task starts, so senders route a job's next task to the worker whose cache holds its session.
Never imports FastAPI.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from segloop.config import Settings
from segloop.jobs.affinity import Affinity, worker_queue
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
    affinity = Affinity(settings.redis_url, alive_ttl=3 * max(settings.heartbeat_seconds, 0.5))

    def runtime() -> Runtime:
        with guard:
            rt: Runtime | None = state.get("runtime")
            if rt is None or state.get("pid") != os.getpid():  # new process (prefork child)
                store = JobStore(settings)
                name = f"{socket.gethostname()}:{os.getpid()}"
                rt = Runtime(settings, store, RedisBus(settings.redis_url), worker=name)
                state["runtime"], state["pid"] = rt, os.getpid()
                _start_reaper(rt, app, settings, affinity, state)
            return rt

    @app.task(  # type: ignore[untyped-decorator]
        name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True,
              max_retries=None)
    def run_task(self: Any, task_id: str, job_id: str | None = None) -> str:
        queue = state.get("queue")
        if queue and job_id:  # the job's next task comes here (job affinity)
            affinity.started(queue, task_id, job_id)
        try:
            outcome = runtime().run(task_id)
        finally:
            if queue and job_id:
                affinity.ended(queue, task_id)
        if outcome == RunOutcome.BLOCKED:
            raise self.retry(countdown=0.2)
        return outcome

    from celery import signals

    @signals.celeryd_after_setup.connect(weak=False)  # type: ignore[untyped-decorator]
    def _own_queue(sender: str, instance: Any, **_: Any) -> None:
        queue = worker_queue(str(sender))
        instance.app.amqp.queues.select_add(queue)
        state["queue"] = queue
        affinity.announce(queue, int(getattr(instance, "concurrency", 1) or 1))

    @signals.worker_shutdown.connect(weak=False)  # type: ignore[untyped-decorator]
    def _bye(**_: Any) -> None:
        if state.get("queue"):
            affinity.gone(state["queue"])

    @signals.worker_ready.connect(weak=False)  # type: ignore[untyped-decorator]
    def _ready(**_: Any) -> None:
        runtime()  # start the reaper as soon as the worker is up
        log.info("segloop worker ready", extra={"queue": "segloop"})

    app.conf.segloop_runtime = runtime
    return app


def _start_reaper(rt: Runtime, app: Any, settings: Settings, affinity: Affinity,
                  state: dict[str, Any]) -> None:
    def resubmit(task_id: str) -> None:
        t = rt.store.get_task(task_id)
        job_id = t.job_id if t is not None else None
        send_task(app, task_id, job_id, affinity.route(job_id))

    reconciler = BrokerReconciler(settings, rt.store, resubmit)

    def loop() -> None:
        stop = threading.Event()
        while not stop.wait(max(settings.heartbeat_seconds, 0.5)):
            if state.get("queue"):
                affinity.announce(state["queue"])  # this worker's queue stays a target
            reap_once(rt, resubmit, reconciler)

    threading.Thread(target=loop, name="segloop-reaper", daemon=True).start()
