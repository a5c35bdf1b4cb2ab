"""Celery job affinity: a job's next task goes to the worker that cached its session.

Every ``segloop worker`` consumes the shared ``segloop`` queue and its own queue
``segloop.w.<node name>``. When a worker runs a task it records, in Redis, job -> its queue
(``segloop:affinity:<job_id>``, kept for :data:`AFFINITY_TTL` seconds); while it lives it
keeps ``segloop:alive:<queue>`` fresh (a short TTL, refreshed by its reaper thread, deleted
at shutdown), with its number of task slots (``segloop:slots:<queue>``) and of tasks it runs
now (``segloop:busy:<queue>``, task -> job). A sender routes a task to the recorded queue
when that worker is alive and has a free slot (tasks of other jobs running + messages waiting
in its queue < slots; a running task of the same job does not count, the next one waits for
it anyway), and to the shared
queue otherwise: a new job, a forgotten one, a dead worker, or a busy one (then any free
worker takes it and replays the session, which costs less than waiting behind another
job's propagation). Messages left in a dead worker's queue are not counted as held
by the broker (segloop.jobs.recovery lists only live workers' queues), so the reconciler sends
those tasks again to the shared queue.

Imports redis lazily; never Celery, torch or FastAPI.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.ism, segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["AFFINITY_TTL", "Affinity", "live_worker_queues", "worker_queue"]

log = logging.getLogger(__name__)

#: how long a job stays bound to the worker that last ran it (seconds)
AFFINITY_TTL = 3600
_QUEUES = "segloop:worker-queues"  # a set of every per-worker queue ever announced


def worker_queue(node: str) -> str:
    """The per-worker queue of Celery node ``node``."""
    return f"segloop.w.{node}"


def _alive_key(queue: str) -> str:
    return f"segloop:alive:{queue}"


def live_worker_queues(client: Any) -> list[str]:
    """The per-worker queues whose worker is alive (read with the redis ``client``)."""
    names = [q.decode() if isinstance(q, bytes) else str(q) for q in client.smembers(_QUEUES)]
    if not names:
        return []
    flags = client.pipeline(transaction=False)
    for q in names:
        flags.exists(_alive_key(q))
    return [q for q, ok in zip(names, flags.execute(), strict=True) if ok]


class Affinity:
    """The Redis map of job -> worker queue and the workers' liveness keys."""

    def __init__(self, redis_url: str, alive_ttl: float = 5.0) -> None:
        self.redis_url, self.alive_ttl = redis_url, max(alive_ttl, 1.0)
        self._client: Any = None

    def _redis(self) -> Any:
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(self.redis_url, socket_timeout=2,
                                                socket_connect_timeout=2)
        return self._client

    def route(self, job_id: str | None) -> str | None:
        """The queue of the live worker that holds ``job_id``'s session, or None (the shared
        queue). Never raises: without Redis the shared queue is the answer."""
        if not job_id:
            return None
        try:
            r = self._redis()
            q = r.get(f"segloop:affinity:{job_id}")
            if q is None:
                return None
            queue = q.decode() if isinstance(q, bytes) else str(q)
            pipe = r.pipeline(transaction=False)
            pipe.exists(_alive_key(queue))
            pipe.get(f"segloop:slots:{queue}")
            pipe.hvals(f"segloop:busy:{queue}")
            pipe.llen(queue)
            alive, slots, running, waiting = pipe.execute()
            others = sum(1 for j in running if (j.decode() if isinstance(j, bytes) else j)
                         != job_id)
            free = int(slots or 1) - others - int(waiting or 0)
            return queue if alive and free > 0 else None
        except Exception as exc:  # redis errors: route to the shared queue
            log.debug("affinity lookup failed: %s", exc)
            return None

    def announce(self, queue: str, slots: int | None = None) -> None:
        """Mark a worker queue live for ``alive_ttl`` seconds (call more often than that);
        ``slots``: how many tasks the worker runs at once (first call)."""
        try:
            r = self._redis()
            pipe = r.pipeline(transaction=False)
            pipe.set(_alive_key(queue), "1", px=int(self.alive_ttl * 1000))
            pipe.sadd(_QUEUES, queue)
            if slots is not None:
                pipe.set(f"segloop:slots:{queue}", int(slots), ex=AFFINITY_TTL)
                pipe.delete(f"segloop:busy:{queue}")
            pipe.execute()
        except Exception as exc:
            log.debug("affinity announce failed: %s", exc)

    def started(self, queue: str, task_id: str, job_id: str) -> None:
        """A task of ``job_id`` starts on the worker of ``queue``: the job is bound to it from
        now on (so its next task, submitted the moment this one is done, finds the binding)."""
        try:
            pipe = self._redis().pipeline(transaction=False)
            pipe.hset(f"segloop:busy:{queue}", task_id, job_id)
            pipe.set(f"segloop:affinity:{job_id}", queue, ex=AFFINITY_TTL)
            pipe.execute()
        except Exception as exc:
            log.debug("affinity start failed: %s", exc)

    def ended(self, queue: str, task_id: str) -> None:
        """A task ended on the worker of ``queue``."""
        try:
            self._redis().hdel(f"segloop:busy:{queue}", task_id)
        except Exception as exc:
            log.debug("affinity end failed: %s", exc)

    def gone(self, queue: str) -> None:
        """A worker stops: its queue is no longer a routing target."""
        try:
            self._redis().delete(_alive_key(queue))
        except Exception as exc:
            log.debug("affinity retire failed: %s", exc)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
