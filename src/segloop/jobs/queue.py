"""The queue protocol and its two implementations: embedded (thread pool) and Celery (Redis).

The API records a task in the job store, then calls ``queue.submit(task_id, job_id)``; the queue only
carries task ids, never arrays. Whatever runs the task calls
:meth:`segloop.jobs.runner.Runtime.run`, so both paths execute the same code.

- :class:`EmbeddedQueue`: worker threads inside the API process (``segloop serve`` alone),
  or, with ``embedded_processes`` > 0, a pool of worker processes with job affinity
  (segloop.jobs.procpool) so the engines run outside the server's interpreter.
  On start it resubmits the tasks a previous process left queued or running, so a restart
  loses nothing (running ones once their heartbeat is stale); a reaper thread requeues tasks
  whose heartbeat stopped. It holds the home's lock (segloop.jobs.homelock) so a second
  embedded server cannot take its live tasks.
- :class:`CeleryQueue`: sends ``segloop.run_task(task_id)`` through Redis to ``segloop worker``
  processes (see segloop.worker), to the worker that cached the job's session when it is alive
  (job affinity, segloop.jobs.affinity). The API process runs the reaper too, so a job whose worker
  died is retried or failed with a reason even if no other worker notices, and the reaper
  re-sends the queued tasks Redis lost (segloop.jobs.recovery). A send that fails raises
  QueueUnavailableError (the API answers 503 and forgets the task).

Never imports torch; Celery is imported only by CeleryQueue.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from segloop.config import Settings
from segloop.jobs.affinity import Affinity
from segloop.jobs.errors import QueueUnavailableError
from segloop.jobs.homelock import HomeLock
from segloop.jobs.procpool import ProcessPool
from segloop.jobs.recovery import BrokerReconciler
from segloop.jobs.runner import RunOutcome, Runtime
from segloop.jobs.states import TaskState

__all__ = ["TASK_NAME", "CeleryQueue", "EmbeddedQueue", "TaskQueue", "make_celery", "reap_once",
           "send_task"]

log = logging.getLogger(__name__)

#: the Celery task name both sides agree on
TASK_NAME = "segloop.run_task"


class TaskQueue(Protocol):
    """Hands task ids to whatever executes them."""

    kind: str

    def submit(self, task_id: str, job_id: str | None = None) -> None:
        """Schedule a recorded task (``job_id``: its job, when the caller knows it: then the
        queue need not read the task to route it); QueueUnavailableError when it could not
        be handed over."""
        ...

    def start(self) -> None:
        """Start background threads (recovery, reaper)."""
        ...

    def close(self) -> None:
        """Stop accepting work and release resources."""
        ...


class _Reaper:
    """Every ``interval``: requeue the tasks of silent workers, and (Celery) re-send the
    queued tasks the broker lost."""

    def __init__(self, runtime: Runtime, resubmit: Any, interval: float,
                 reconciler: BrokerReconciler | None = None) -> None:
        self.runtime, self.resubmit, self.interval = runtime, resubmit, interval
        self.reconciler = reconciler
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="segloop-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            reap_once(self.runtime, self.resubmit, self.reconciler)

    def stop(self) -> None:
        self._stop.set()
        if self.reconciler is not None:
            self.reconciler.close()


def reap_once(runtime: Runtime, resubmit: Any, reconciler: BrokerReconciler | None) -> None:
    """One reaper round (never raises: the reaper thread must stay alive)."""
    try:
        runtime.reap(resubmit)
    except Exception as exc:  # pragma: no cover - database or broker hiccup
        log.warning("reaper: %s", exc)
    if reconciler is not None and reconciler.due():
        try:
            reconciler.run()
        except Exception as exc:  # pragma: no cover - database hiccup
            log.warning("reconcile: %s", exc)


class EmbeddedQueue:
    """In-process worker threads (``settings.workers`` of them), or worker processes
    (``settings.embedded_processes`` of them, each with ``workers`` threads)."""

    kind = "embedded"

    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        self.settings, self.runtime = settings, runtime
        self._pool = ThreadPoolExecutor(max_workers=settings.workers,
                                        thread_name_prefix="segloop-worker")
        self.processes: ProcessPool | None = None
        if settings.embedded_processes > 0:
            self.processes = ProcessPool(settings, settings.embedded_processes,
                                         runtime.bus.publish, self._later, runtime)
        self._closed = False
        self._reaper = _Reaper(runtime, self.submit, max(settings.heartbeat_seconds, 0.5))
        # one embedded server per home: a second one would requeue this one's live tasks
        self._home_lock = HomeLock(settings.home)
        self._home_lock.acquire()

    def start(self) -> None:
        """Resubmit what a previous server left: its queued tasks, and its running tasks
        whose heartbeat is stale. A running task with a live heartbeat belongs to a live
        worker (another process sharing this job store): the reaper takes it over only if
        that worker goes silent."""
        store = self.runtime.store
        stale = set(store.stale_tasks())
        for tid in store.unfinished_tasks():
            t = store.get_task(tid)
            if t is not None and t.state == TaskState.RUNNING:
                if tid not in stale:
                    log.info("task %s runs on live worker %s: left to it", tid, t.worker)
                    continue
                store.requeue(tid, "the server stopped while it ran")
            log.info("resubmitting task %s left by a previous run", tid)
            self.submit(tid)
        self._reaper.start()

    def submit(self, task_id: str, job_id: str | None = None) -> None:
        if self._closed:
            return
        if self.processes is not None:
            if job_id is None:
                t = self.runtime.store.get_task(task_id)
                job_id = t.job_id if t is not None else None
            if job_id is not None:
                self.processes.submit(job_id, task_id)
            return
        self._pool.submit(self._run, task_id)

    def _later(self, task_id: str) -> None:
        """Submit a blocked task again shortly (its job's earlier tasks are unfinished)."""
        if self._closed:
            return
        timer = threading.Timer(0.05, self.submit, args=(task_id,))
        timer.daemon = True
        timer.start()

    def _run(self, task_id: str) -> None:
        try:
            outcome = self.runtime.run(task_id)
        except Exception:  # pragma: no cover - run() records its own failures
            log.exception("task %s crashed the runner", task_id)
            return
        if outcome == RunOutcome.BLOCKED:
            self._later(task_id)

    def close(self) -> None:
        self._closed = True
        self._reaper.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.processes is not None:
            self.processes.close()
        self.runtime.close()
        self._home_lock.release()


def send_task(app: Any, task_id: str, job_id: str | None = None,
              queue: str | None = None) -> None:
    """Publish ``segloop.run_task(task_id, job_id)`` (the Celery task id is the segloop task
    id, so the broker's messages name their tasks) to ``queue`` (a worker's own queue: job
    affinity) or the shared queue; QueueUnavailableError when the broker fails."""
    args = [task_id] if job_id is None else [task_id, job_id]
    try:
        if queue:
            app.send_task(TASK_NAME, args=args, task_id=task_id, queue=queue,
                          routing_key=queue)
        else:
            app.send_task(TASK_NAME, args=args, task_id=task_id)
    except Exception as exc:  # kombu/redis raise a variety of connection errors
        raise QueueUnavailableError(
            "the task queue (Redis) is unavailable, nothing was submitted: try again in a "
            f"moment ({type(exc).__name__})") from exc


def make_celery(settings: Settings) -> Any:
    """A Celery app configured for segloop: late ack, prefetch 1, requeue on worker loss."""
    from celery import Celery

    app = Celery("segloop", broker=settings.redis_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue="segloop",
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        broker_connection_retry_on_startup=True,
        # a send while Redis is down fails within seconds (the API then answers 503) instead
        # of blocking a request thread on reconnects
        broker_connection_timeout=2.0,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2,
                                   "interval_step": 0.5, "interval_max": 1.0},
        worker_hijack_root_logger=False,
        worker_send_task_events=True,  # task-received/started/succeeded for Flower
    )
    return app


class CeleryQueue:
    """Tasks go to ``segloop worker`` processes through Redis."""

    kind = "celery"

    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        self.settings, self.runtime = settings, runtime
        self.app = make_celery(settings)
        self.affinity = Affinity(settings.redis_url)
        self._reaper = _Reaper(runtime, self.submit, max(settings.heartbeat_seconds, 0.5),
                               BrokerReconciler(settings, runtime.store, self.submit))

    def start(self) -> None:
        self._reaper.start()

    def submit(self, task_id: str, job_id: str | None = None) -> None:
        """Send a task id to the workers (to the one holding its job's session when it is
        alive); QueueUnavailableError when Redis cannot take it."""
        if job_id is None:
            t = self.runtime.store.get_task(task_id)
            job_id = t.job_id if t is not None else None
        send_task(self.app, task_id, job_id, self.affinity.route(job_id))

    def depth(self) -> int:
        """Messages waiting in the Redis queue."""
        import redis

        client = redis.Redis.from_url(self.settings.redis_url)
        try:
            return int(client.llen("segloop"))
        finally:
            client.close()

    def close(self) -> None:
        self._reaper.stop()
        self.affinity.close()
