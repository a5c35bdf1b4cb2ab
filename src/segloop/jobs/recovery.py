"""Keeping the job store and the Celery broker in step when Redis has trouble.

The job store is the source of truth; the broker only carries task ids. Two things can make
them disagree, and both used to wedge a job for good (every later task of a job waits behind
its earlier ones):

- **A submit while Redis is down.** The API records a ``queued`` task, then the send fails.
  :func:`discard_unsent` removes that task again (in one transaction, pointing the job's
  ``last_task`` back at its previous task), and the API answers 503: nothing was recorded.
- **Messages lost by the broker.** A restart of a Redis without persistence (or a flushed
  database) loses the queued messages, which stay ``queued`` in the store forever.
  :class:`BrokerReconciler` compares the store's queued tasks with the messages Redis holds
  (the ``segloop`` list, the live workers' own queues -- segloop.jobs.affinity -- and the
  ``unacked`` hash of delivered, not yet acknowledged messages)
  and sends again every queued task the broker lacks. It runs every :data:`RECONCILE_SECONDS`
  in the API and in every worker (its reaper thread), one process at a time (a Redis lock), and
  whenever Redis is unreachable it does nothing until the next round: so the first round after
  Redis comes back re-enqueues what was lost.

Re-sending is idempotent: a task's message carries its id as the Celery task id, a claim is a
conditional update, so a task never runs twice at once and a duplicate message of a running
or finished task is skipped. A message delivered to a worker that died before claiming it is
counted as lost once it has been unacknowledged for ``stale_after_seconds``.

Imports SQLAlchemy and (lazily) redis; never Celery, torch or FastAPI.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.ism, segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Table, delete, select, update

from segloop.config import Settings
from segloop.jobs.affinity import live_worker_queues
from segloop.jobs.db import JobRow, TaskRow, utcnow
from segloop.jobs.states import TaskState
from segloop.jobs.store import JobStore

__all__ = ["BROKER_QUEUE", "RECONCILE_SECONDS", "BrokerReconciler", "broker_task_ids",
           "discard_unsent"]

log = logging.getLogger(__name__)

#: the Redis list Celery's messages wait in (``task_default_queue``)
BROKER_QUEUE = "segloop"
#: how often the store's queued tasks are compared with the broker's messages
RECONCILE_SECONDS = 5.0
_UNACKED, _UNACKED_INDEX = "unacked", "unacked_index"  # kombu's Redis transport defaults
_LOCK_KEY = "segloop:reconcile-lock"

_T: Table = TaskRow.__table__  # type: ignore[assignment]
_J: Table = JobRow.__table__  # type: ignore[assignment]


def discard_unsent(store: JobStore, task_id: str) -> bool:
    """Remove a task that was recorded but never reached the broker (still queued, never
    attempted); the job's ``last_task`` goes back to its newest remaining task. Returns whether
    a task was removed."""
    with store.engine.begin() as conn:
        job_id = conn.execute(select(_T.c.job_id).where(
            _T.c.id == task_id, _T.c.state == TaskState.QUEUED, _T.c.attempts == 0)).scalar()
        if job_id is None:
            return False
        conn.execute(delete(_T).where(_T.c.id == task_id))
        prev = conn.execute(select(_T.c.id).where(_T.c.job_id == job_id)
                            .order_by(_T.c.seq.desc()).limit(1)).scalar()
        conn.execute(update(_J).where(_J.c.id == job_id, _J.c.last_task == task_id)
                     .values(last_task=prev))
    return True


def _message_task_id(raw: bytes | str) -> str | None:
    """The segloop task id a Celery message (protocol 2, JSON) carries, or None."""
    try:
        msg = json.loads(raw)
        if isinstance(msg, list):  # unacked entries: [message, exchange, routing_key]
            msg = msg[0]
        headers = msg.get("headers") or {}
        if headers.get("task") not in (None, "segloop.run_task"):
            return None
        body = json.loads(base64.b64decode(msg["body"]))
        args = body[0] if isinstance(body, list) else body.get("args", [])
        return str(args[0]) if args else headers.get("id")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def broker_task_ids(client: Any, unacked_max_age: float) -> set[str]:
    """Task ids whose messages Redis holds: waiting in the queue, or delivered and not yet
    acknowledged for less than ``unacked_max_age`` seconds."""
    queues = [BROKER_QUEUE, *live_worker_queues(client)]  # a dead worker's queue: lost
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(_UNACKED)
    pipe.zrange(_UNACKED_INDEX, 0, -1, withscores=True)
    for q in queues:
        pipe.lrange(q, 0, -1)
    unacked, index, *lists = pipe.execute()
    ids = {t for waiting in lists for t in map(_message_task_id, waiting) if t}
    now = time.time()
    delivered = {tag: score for tag, score in index}
    for tag, raw in unacked.items():
        if now - delivered.get(tag, now) < unacked_max_age:
            tid = _message_task_id(raw)
            if tid:
                ids.add(tid)
    return ids


class BrokerReconciler:
    """Re-sends the queued tasks the broker lacks (see the module docstring)."""

    def __init__(self, settings: Settings, store: JobStore, send: Callable[[str], None],
                 min_age: float = RECONCILE_SECONDS) -> None:
        self.settings, self.store, self.send = settings, store, send
        self.min_age = min_age
        self._client: Any = None
        self._next = 0.0

    def due(self) -> bool:
        """Whether a round is due (called from a reaper loop that runs more often)."""
        return time.monotonic() >= self._next

    def run(self) -> list[str]:
        """One round: returns the ids sent again ([] when Redis is unreachable, when another
        process holds the round's lock, or when nothing was lost)."""
        import redis

        self._next = time.monotonic() + RECONCILE_SECONDS
        cutoff = utcnow() - dt.timedelta(seconds=self.min_age)
        with self.store.engine.connect() as conn:
            queued = [str(t) for t in conn.execute(select(_T.c.id).where(
                _T.c.state == TaskState.QUEUED, _T.c.created < cutoff).order_by(_T.c.created))
                .scalars()]
        if not queued:
            return []
        try:
            if self._client is None:
                self._client = redis.Redis.from_url(self.settings.redis_url,
                                                    socket_timeout=5, socket_connect_timeout=2)
            if not self._client.set(_LOCK_KEY, "1", nx=True,
                                    px=int(RECONCILE_SECONDS * 1000 * 0.8)):
                return []
            present = broker_task_ids(self._client, self.settings.stale_after_seconds)
        except redis.RedisError as exc:
            log.info("reconcile: broker unreachable (%s); will retry", exc)
            return []
        lost = [t for t in queued if t not in present]
        for tid in lost:
            log.warning("task %s is queued in the store but not in the broker: sending it "
                        "again", tid)
            self.send(tid)
        return lost

    def close(self) -> None:
        """Release the Redis connection."""
        if self._client is not None:
            self._client.close()
            self._client = None
