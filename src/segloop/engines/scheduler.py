"""A per-process device scheduler: one thread runs the image-encoder work of every session in
shared batches, interactive requests first, propagation chunks round-robin by user.

Concurrency model. Sessions (one per job, each driven by the worker thread running that job's
task) do not call the model's image encoder themselves: they :meth:`DeviceScheduler.submit`
their slices (a 2D prompt's one slice as :attr:`Priority.INTERACTIVE`, a chunk of slices ahead
of tracking as :attr:`Priority.AHEAD`) and block until the device thread hands back one result
per slice. The device thread takes requests in this order until ``max_batch`` slices are
gathered: interactive requests (one per client per round), then propagation
chunks, one per client per round, starting each batch with the client after the last one served
(the request that does not fit whole is split: its first slices go now, the rest next). So a 2D
prompt of user B waits for at most the batch already running, never behind user A's 200-slice
propagation, and two propagations advance in turns; and when interactive slices have filled
``max_bypass`` batches in a row while a propagation chunk waited, the chunk gets the next
batch's first turn (heavy interactive use slows propagations down, it never stops them). When
the batch is not full and another client submitted work within the last ``active_window_s``
(it is likely to submit again), the device thread waits up to ``max_wait_s`` for more; a lone
client never waits.

Clients are user names: :func:`client_scope` names the user on whose behalf the current thread
(or task) calls the engine (the job runner sets it to the task's owner), and a session passes
its own id when no scope is set. What a batch *is* belongs to the caller: ``run`` receives the
requests' parts (slices of their ``inputs`` sequences, in batch order) and returns one result
per slice. Memory attention, decoder and memory encoder steps stay per-session and sequential
under a :class:`DeviceLock`, which hands the model over in priority order (a 2D prompt's
decoder step before the next tracking step of a propagation, up to ``max_bypass`` times in a
row) and first come first served
within a priority: a thread that releases it and asks again queues behind those waiting, so
a long propagation cannot keep the model (a plain ``RLock`` lets it, as it has no order).
Only the image encoder is batched across sessions.

The thread starts on the first request and ends after ``idle_exit_s`` without work (it starts
again when needed), so a dropped engine leaves no thread behind. Pure threading: no torch.
Must not import FastAPI, Celery, the CLI or ``segloop.jobs``.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Generic, TypeVar, cast

__all__ = [
    "DeviceLock",
    "DeviceScheduler",
    "Priority",
    "SchedulerStats",
    "client_scope",
    "current_client",
]

T = TypeVar("T")
R = TypeVar("R")

_client: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "segloop_device_client", default=None)


def current_client() -> str | None:
    """The user name set by the innermost :func:`client_scope` of this thread/task, or None."""
    return _client.get()


@contextlib.contextmanager
def client_scope(name: str | None) -> Iterator[None]:
    """Run the block on behalf of user ``name``: device work it submits shares that user's turn."""
    token = _client.set(name)
    try:
        yield
    finally:
        _client.reset(token)


class Priority(IntEnum):
    """Which queue a request waits in; lower runs first."""

    INTERACTIVE = 0  # a slice the user is waiting for (a 2D prompt, a correction)
    AHEAD = 1  # slices encoded ahead of tracking during a propagation


@dataclass(eq=False)
class _Waiter:
    priority: Priority
    ticket: int
    bypassed: int = 0  # interactive holders granted the lock while this one waited


class DeviceLock:
    """A reentrant lock handed over by (priority, arrival): see the module docstring.

    ``with lock:`` waits as :attr:`Priority.AHEAD`; ``with lock.hold(Priority.INTERACTIVE):``
    goes before every waiting AHEAD holder (never before the current holder), except that an
    AHEAD waiter passed over ``max_bypass`` times goes next: interactive work cannot starve a
    propagation."""

    def __init__(self, max_bypass: int = 4) -> None:
        self.max_bypass = int(max_bypass)
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._waiting: list[_Waiter] = []
        self._granted: _Waiter | None = None  # chosen, not yet taken by its thread
        self._ticket = 0

    def _grant_locked(self) -> None:
        """Choose the next holder among the waiters (there is one at least) and wake them."""
        chosen = min(self._waiting, key=lambda w: (w.priority, w.ticket))
        ahead = [w for w in self._waiting if w.priority == Priority.AHEAD]
        if chosen.priority == Priority.INTERACTIVE and ahead:
            oldest = min(ahead, key=lambda w: w.ticket)
            if oldest.bypassed >= self.max_bypass:
                chosen = oldest
            else:
                for w in ahead:
                    w.bypassed += 1
        self._granted = chosen
        self._cond.notify_all()

    def acquire(self, priority: Priority = Priority.AHEAD) -> bool:
        """Take the lock (again, when this thread holds it); always True."""
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return True
            self._ticket += 1
            entry = _Waiter(priority, self._ticket)
            self._waiting.append(entry)
            if self._owner is None and self._granted is None:
                self._grant_locked()
            while self._granted is not entry:
                self._cond.wait()
            self._granted = None
            self._waiting.remove(entry)
            self._owner, self._depth = me, 1
            return True

    def release(self) -> None:
        """Give one level back; at the last, the lock goes to the next waiter in order."""
        with self._cond:
            if self._owner != threading.get_ident():
                raise RuntimeError("release of a DeviceLock this thread does not hold")
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                if self._waiting:
                    self._grant_locked()

    @contextlib.contextmanager
    def hold(self, priority: Priority) -> Iterator[None]:
        """Hold the lock for the block, queued at ``priority``."""
        self.acquire(priority)
        try:
            yield
        finally:
            self.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class _Request(Generic[T, R]):
    client: str
    priority: Priority
    inputs: Sequence[T]
    seq: int
    taken: int = 0  # slices handed to a batch so far
    results: list[R | None] = field(default_factory=list)
    filled: int = 0
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class SchedulerStats:
    """Counters since the scheduler was made: batches run, slices encoded, the largest batch
    and the batches that mixed several clients."""

    batches: int = 0
    slices: int = 0
    largest: int = 0
    mixed: int = 0
    #: the clients served by each of the last 256 batches, in batch order
    order: deque[tuple[str, ...]] = field(default_factory=lambda: deque(maxlen=256))


class DeviceScheduler(Generic[T, R]):
    """Batches the device work of many sessions; see the module docstring.

    ``run(parts)`` gets a list of sequences (each a contiguous part of one request's
    ``inputs``) and returns a list with one result per element of all parts, in order; it runs
    on the device thread only. ``max_batch``: slices per call (>= 1); ``max_wait_s``: how long
    a batch that is not full waits for other clients' work; ``active_window_s``: how recently
    another client must have submitted for that wait to happen; ``max_bypass``: batches in a
    row that may leave waiting propagation chunks out for interactive slices.
    """

    def __init__(self, run: Callable[[list[Sequence[T]]], list[R]], max_batch: int = 16,
                 max_wait_s: float = 0.003, active_window_s: float = 0.25,
                 idle_exit_s: float = 30.0, max_bypass: int = 4,
                 name: str = "segloop-device") -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must not be negative, got {max_wait_s}")
        self._run = run
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_s)
        self.active_window_s = float(active_window_s)
        self.idle_exit_s = float(idle_exit_s)
        self.max_bypass = int(max_bypass)
        self._ahead_skipped = 0  # batches in a row that left waiting propagation chunks out
        self._name = name
        self._cond = threading.Condition()
        # per priority: client -> its pending requests (FIFO); the dict order is the turn order
        self._queues: dict[Priority, dict[str, deque[_Request[T, R]]]] = {p: {} for p in Priority}
        self._last_seen: dict[str, float] = {}
        self._seq = 0
        self._thread: threading.Thread | None = None
        self._closed = False
        self.stats = SchedulerStats()

    # ------------------------------------------------------------------ callers

    def submit(self, inputs: Sequence[T], priority: Priority, client: str) -> list[R]:
        """Queue ``inputs`` (one element per slice) for ``client`` and wait for their results
        (one per element, same order). Raises what ``run`` raised for their batch."""
        if not len(inputs):
            return []
        req: _Request[T, R] = _Request(client=client, priority=priority, inputs=inputs,
                                       seq=0, results=[None] * len(inputs))
        with self._cond:
            if self._closed:
                raise RuntimeError("the device scheduler is closed")
            self._seq += 1
            req.seq = self._seq
            self._queues[priority].setdefault(client, deque()).append(req)
            now = time.monotonic()
            self._last_seen = {c: t for c, t in self._last_seen.items()
                               if now - t <= self.active_window_s}
            self._last_seen[client] = now
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()
        req.done.wait()
        if req.error is not None:
            raise req.error
        return cast(list[R], req.results)

    def close(self) -> None:
        """Stop the device thread once the queued work is done; later submits raise."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def pending(self) -> int:
        """Slices queued and not yet handed to a batch."""
        with self._cond:
            return self._pending_locked()

    # ------------------------------------------------------------------ device thread

    def _pending_locked(self) -> int:
        return sum(len(r.inputs) - r.taken for q in self._queues.values()
                   for reqs in q.values() for r in reqs)

    def _should_wait_locked(self, now: float) -> bool:
        """Wait for more only when the batch is not full and another client is active."""
        if self.max_wait_s <= 0 or self._pending_locked() >= self.max_batch:
            return False
        waiting = {c for q in self._queues.values() for c, reqs in q.items() if reqs}
        return any(c not in waiting and now - t <= self.active_window_s
                   for c, t in self._last_seen.items())

    def _take_locked(self) -> list[tuple[_Request[T, R], int, int]]:
        """The next batch: (request, first, stop) parts, interactive first, round-robin; a
        propagation chunk passed over ``max_bypass`` batches in a row gets the first turn."""
        parts: list[tuple[_Request[T, R], int, int]] = []
        room = self.max_batch
        ahead_waiting = bool(self._queues[Priority.AHEAD])
        if ahead_waiting and self._ahead_skipped >= self.max_bypass:
            room = self._serve_locked(Priority.AHEAD, room, parts, turns=1)
        for prio in Priority:
            room = self._serve_locked(prio, room, parts)
        if ahead_waiting:
            served = any(req.priority == Priority.AHEAD for req, _, _ in parts)
            self._ahead_skipped = 0 if served else self._ahead_skipped + 1
        return parts

    def _serve_locked(self, prio: Priority, room: int,
                      parts: list[tuple[_Request[T, R], int, int]], turns: int | None = None
                      ) -> int:
        """Give ``prio``'s clients turns (their oldest request, or as much of it as fits) until
        the batch is full, the queue is empty or ``turns`` are used; returns the room left."""
        queues = self._queues[prio]
        while room > 0 and queues and (turns is None or turns > 0):
            client = next(iter(queues))
            reqs = queues.pop(client)
            req = reqs[0]
            n = min(room, len(req.inputs) - req.taken)
            parts.append((req, req.taken, req.taken + n))
            req.taken += n
            room -= n
            if req.taken == len(req.inputs):
                reqs.popleft()
            if reqs:  # the client's turn is over: to the back of the turn order
                queues[client] = reqs
            if turns is not None:
                turns -= 1
        return room

    def _loop(self) -> None:
        while True:
            with self._cond:
                idle_since = time.monotonic()
                while not self._pending_locked():
                    if self._closed or time.monotonic() - idle_since >= self.idle_exit_s:
                        self._thread = None
                        return
                    self._cond.wait(self.idle_exit_s)
                now = time.monotonic()
                deadline = now + self.max_wait_s
                while self._should_wait_locked(now) and now < deadline:
                    self._cond.wait(deadline - now)
                    now = time.monotonic()
                parts = self._take_locked()
            self._execute(parts)

    def _execute(self, parts: list[tuple[_Request[T, R], int, int]]) -> None:
        try:
            results = self._run([req.inputs[a:b] for req, a, b in parts])
            n = sum(b - a for _, a, b in parts)
            if len(results) != n:
                raise RuntimeError(f"the device batch returned {len(results)} results for {n} "
                                   "slices")
            error: BaseException | None = None
        except BaseException as exc:  # handed to every caller of the batch
            error, results = exc, []
        clients = tuple(dict.fromkeys(req.client for req, _, _ in parts))
        with self._cond:
            st = self.stats
            st.batches += 1
            n = sum(b - a for _, a, b in parts)
            st.slices += n
            st.largest = max(st.largest, n)
            st.mixed += len(clients) > 1
            st.order.append(clients)
            k = 0
            for req, a, b in parts:
                if error is not None:
                    req.error = error
                    self._forget_locked(req)
                    req.done.set()
                    continue
                req.results[a:b] = results[k:k + b - a]
                k += b - a
                req.filled += b - a
                if req.filled == len(req.inputs):
                    req.done.set()

    def _forget_locked(self, req: _Request[T, R]) -> None:
        """Drop the rest of a failed request from its queue."""
        reqs = self._queues[req.priority].get(req.client)
        if reqs is not None and req in reqs:
            reqs.remove(req)
            if not reqs:
                del self._queues[req.priority][req.client]
