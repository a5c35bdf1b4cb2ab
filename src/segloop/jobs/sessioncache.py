"""A per-process LRU cache of engine sessions, keyed by job, bounded in number and bytes.

Used by segloop.jobs.runner; must not import the runner, the store, FastAPI, Celery or torch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from segloop.engines.base import Session
from segloop.jobs.sizing import estimate_bytes

__all__ = ["SessionCache"]


@dataclass
class _Entry:
    engine: str
    version: int
    generation: str
    session: Session
    nbytes: int = 0


class SessionCache:
    """Least-recently-used engine sessions, keyed by job id, bounded in number (``size``) and
    in estimated bytes (``max_bytes``, see :mod:`segloop.jobs.sizing`; 0: no byte bound).
    The newest session is always kept, whatever its size (the task that made it needs it)."""

    def __init__(self, size: int, max_bytes: int = 0) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self._d: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Estimated bytes of the cached sessions (measured when each was cached)."""
        with self._lock:
            return sum(e.nbytes for e in self._d.values())

    def get(self, job_id: str, engine: str, version: int, generation: str) -> Session | None:
        """The cached session when it is at ``version`` with the same engine and model generation."""
        with self._lock:
            e = self._d.get(job_id)
            if e is None or (e.engine, e.version, e.generation) != (engine, version, generation):
                return None
            self._d.move_to_end(job_id)
            return e.session

    def peek(self, job_id: str, engine: str, generation: str) -> tuple[Session, int] | None:
        """The cached session of a job (same engine and model generation) and its version,
        whatever that version is; None when there is none."""
        with self._lock:
            e = self._d.get(job_id)
            if e is None or (e.engine, e.generation) != (engine, generation):
                return None
            self._d.move_to_end(job_id)
            return e.session, e.version

    def put(self, job_id: str, engine: str, version: int, generation: str,
            session: Session) -> None:
        """Cache a session as being at ``version``; evicts the least recently used sessions
        beyond ``size`` sessions or ``max_bytes`` estimated bytes."""
        nbytes = estimate_bytes(session) if self.max_bytes else 0
        with self._lock:
            self._d[job_id] = _Entry(engine, version, generation, session, nbytes)
            self._d.move_to_end(job_id)
            total = sum(e.nbytes for e in self._d.values())
            while len(self._d) > 1 and (len(self._d) > self.size or
                                        (self.max_bytes and total > self.max_bytes)):
                _, old = self._d.popitem(last=False)
                total -= old.nbytes

    def drop(self, job_id: str) -> None:
        """Forget a job's session (after a failure leaves it half-updated)."""
        with self._lock:
            self._d.pop(job_id, None)

    def clear(self) -> None:
        """Forget all sessions."""
        with self._lock:
            self._d.clear()

    def __len__(self) -> int:
        return len(self._d)
