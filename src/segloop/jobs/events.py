"""Progress events from workers to API clients: an in-process bus and a Redis pub/sub bus.

Workers call ``publish(job_id, event)`` (synchronous, from any thread or process); the API's
SSE endpoint opens ``subscribe(job_id)`` and awaits events. The embedded queue uses
:class:`LocalBus` (the worker threads live in the API process); the Celery queue uses
:class:`RedisBus` (channel ``segloop:job:<job_id>``). Events are small JSON-able dicts with a
``type`` ("queued", "started", "progress", "recovering", "done", "failed", "cancelled",
"version"; clients ignore types they do not know). Events are a push
channel only: the job store stays the source of truth, so a client that connects late first
reads the status from the store. Imports redis lazily; never torch, FastAPI or Celery.

Cost: a subscriber wakes the event loop once per burst of events, not once per event (events
published while a wake-up is pending ride along with it); one that takes only tasks' ends
(a protocol request waiting for its task) is not woken by progress, and when every
subscriber of a job is such, :meth:`EventBus.wants_progress` tells the embedded worker to
build no slice masks for it. The Redis bus keeps one
pattern-subscribed connection per API process (a listener thread) and fans events out to
the local subscribers, so following a task's events costs no Redis connection or round trip.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.ism, segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections import deque
from typing import Any, Protocol

from segloop.jobs.states import EventType

__all__ = ["EventBus", "LocalBus", "RedisBus", "Subscription", "make_bus"]

log = logging.getLogger(__name__)

#: the events of a task's end (what an ``ends_only`` subscriber gets)
_ENDS = frozenset({EventType.DONE, EventType.FAILED, EventType.CANCELLED})


class Subscription(Protocol):
    """An open subscription to one job's events (used from the event loop)."""

    async def get(self, timeout: float) -> dict[str, Any] | None:
        """The next event, or None after ``timeout`` seconds without one."""
        ...

    def ready(self) -> list[dict[str, Any]]:
        """The events already received and not yet taken, without waiting (a stream writes
        them out together with the one :meth:`get` returned)."""
        ...

    async def close(self) -> None:
        """Stop receiving."""
        ...


class EventBus(Protocol):
    """Publish from workers; subscribe from the API."""

    def publish(self, job_id: str, event: dict[str, Any]) -> None:
        """Send one event to every subscriber of ``job_id`` (never raises)."""
        ...

    async def subscribe(self, job_id: str, ends_only: bool = False) -> Subscription:
        """Start receiving ``job_id``'s events (events published before this call are missed);
        ``ends_only``: only tasks' ends (done, failed, cancelled), e.g. a protocol request
        that waits for its task and shows no progress."""
        ...

    def wants_progress(self, job_id: str) -> bool:
        """Whether a subscriber may want ``job_id``'s progress events (slice masks): False
        only when every subscriber of this process takes ends only and no other process can
        listen, so a worker need not build them."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _LocalSub:
    """Events pushed from any thread reach the loop once per burst (``_drain``); ``get``
    waits on one plain future with a timer (no task per wait, as ``asyncio.wait_for`` on a
    coroutine would make)."""

    MAX_EVENTS = 10000  # a subscriber that stops reading loses events beyond this, not memory

    def __init__(self, bus: LocalBus, job_id: str, ends_only: bool = False) -> None:
        self.bus, self.job_id, self.ends_only = bus, job_id, ends_only
        self.loop = asyncio.get_running_loop()
        self._events: deque[dict[str, Any]] = deque()  # delivered, not yet taken (loop side)
        self._waiter: asyncio.Future[None] | None = None
        self._pending: list[dict[str, Any]] = []
        self._scheduled = False
        self._lock = threading.Lock()

    def push(self, event: dict[str, Any]) -> None:
        if self.ends_only and event.get("type") not in _ENDS:
            return  # no wake-up of the loop for what this subscriber ignores
        with self._lock:
            self._pending.append(event)
            if self._scheduled:  # a wake-up is already on its way: the event rides along
                return
            self._scheduled = True
        with contextlib.suppress(RuntimeError):  # loop closed: the client went away
            self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            events, self._pending = self._pending, []
            self._scheduled = False
        room = self.MAX_EVENTS - len(self._events)
        self._events.extend(events[:max(room, 0)])
        if self._waiter is not None:
            _wake(self._waiter)

    async def get(self, timeout: float) -> dict[str, Any] | None:
        if not self._events:
            fut: asyncio.Future[None] = self.loop.create_future()
            self._waiter = fut
            timer = self.loop.call_later(timeout, _wake, fut)
            try:
                await fut
            finally:
                timer.cancel()
                self._waiter = None
        return self._events.popleft() if self._events else None

    def ready(self) -> list[dict[str, Any]]:
        out = list(self._events)
        self._events.clear()
        return out

    async def close(self) -> None:
        self.bus._remove(self)


class LocalBus:
    """Events within one process (embedded queue)."""

    def __init__(self) -> None:
        self._subs: dict[str, set[_LocalSub]] = {}
        self._lock = threading.Lock()

    def publish(self, job_id: str, event: dict[str, Any]) -> None:
        with self._lock:
            subs = list(self._subs.get(job_id, ()))
        for sub in subs:
            sub.push(event)

    def has_subscribers(self, job_id: str) -> bool:
        """Whether anyone listens to ``job_id`` here."""
        return job_id in self._subs

    def wants_progress(self, job_id: str) -> bool:
        with self._lock:
            return any(not s.ends_only for s in self._subs.get(job_id, ()))

    async def subscribe(self, job_id: str, ends_only: bool = False) -> Subscription:
        sub = _LocalSub(self, job_id, ends_only)
        with self._lock:
            self._subs.setdefault(job_id, set()).add(sub)
        return sub

    def _remove(self, sub: _LocalSub) -> None:
        with self._lock:
            s = self._subs.get(sub.job_id)
            if s is not None:
                s.discard(sub)
                if not s:
                    del self._subs[sub.job_id]

    def close(self) -> None:
        with self._lock:
            self._subs.clear()


def _channel(job_id: str) -> str:
    return f"segloop:job:{job_id}"


_PATTERN = "segloop:job:*"


class RedisBus:
    """Events through Redis pub/sub (Celery queue: workers in other processes or hosts).

    ``publish`` sends on the job's channel. ``subscribe`` (API side) starts, on first use, one
    listener thread holding a pattern subscription to every job channel; it hands the events
    of jobs someone follows to a :class:`LocalBus`. If Redis goes away the listener
    reconnects; events sent meanwhile are lost, which the SSE stream covers by reading the
    store (events are best effort, the store is the truth)."""

    def __init__(self, url: str) -> None:
        import redis

        self.url = url
        self._client = redis.Redis.from_url(url)
        self._local = LocalBus()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    def publish(self, job_id: str, event: dict[str, Any]) -> None:
        try:
            self._client.publish(_channel(job_id), json.dumps(event))
        except Exception as exc:  # events are best effort; the store has the truth
            log.warning("could not publish event for job %s: %s", job_id, exc)

    def _listen(self) -> None:
        import redis

        prefix = len(_channel(""))
        while not self._stop.is_set():
            client = redis.Redis.from_url(self.url)
            pubsub = client.pubsub()  # type: ignore[no-untyped-call]
            try:
                pubsub.psubscribe(_PATTERN)
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=1.0)
                    if msg is None:
                        continue
                    if msg.get("type") == "psubscribe":  # Redis confirmed the subscription
                        self._ready.set()
                    if msg.get("type") != "pmessage":
                        continue
                    channel = msg["channel"]
                    job_id = (channel.decode() if isinstance(channel, bytes) else channel)[prefix:]
                    if self._local.has_subscribers(job_id):
                        self._local.publish(job_id, json.loads(msg["data"]))
            except Exception as exc:  # reconnect; the SSE stream falls back on the store
                log.warning("event listener lost Redis (%s); reconnecting", exc)
                self._stop.wait(1.0)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()
                    client.close()

    def _ensure_listener(self) -> None:
        with self._guard:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._listen, daemon=True,
                                                name="segloop-event-listener")
                self._thread.start()

    def wants_progress(self, job_id: str) -> bool:
        return True  # listeners in other processes are not known here

    async def subscribe(self, job_id: str, ends_only: bool = False) -> Subscription:
        self._ensure_listener()
        if not self._ready.is_set():  # first subscriber: wait for the pattern subscription
            await asyncio.get_running_loop().run_in_executor(None, self._ready.wait, 5.0)
        return await self._local.subscribe(job_id, ends_only)

    def close(self) -> None:
        self._stop.set()
        self._local.close()
        self._client.close()


def make_bus(queue: str, redis_url: str) -> EventBus:
    """The bus matching a queue kind ("embedded" -> LocalBus, "celery" -> RedisBus)."""
    return RedisBus(redis_url) if queue == "celery" else LocalBus()
