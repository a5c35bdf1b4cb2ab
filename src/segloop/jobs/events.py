"""Progress events from workers to API clients: an in-process bus and a Redis pub/sub bus.

Workers call ``publish(job_id, event)`` (synchronous, from any thread or process); the API's
SSE endpoint opens ``subscribe(job_id)`` and awaits events. The embedded queue uses
:class:`LocalBus` (the worker threads live in the API process); the Celery queue uses
:class:`RedisBus` (channel ``segloop:job:<job_id>``). Events are small JSON-able dicts with a
``type`` ("queued", "started", "progress", "done", "failed", "cancelled"). Events are a push
channel only: the job store stays the source of truth, so a client that connects late first
reads the status from the store. Imports redis lazily; never torch, FastAPI or Celery.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from typing import Any, Protocol

__all__ = ["EventBus", "LocalBus", "RedisBus", "Subscription", "make_bus"]

log = logging.getLogger(__name__)


class Subscription(Protocol):
    """An open subscription to one job's events (used from the event loop)."""

    async def get(self, timeout: float) -> dict[str, Any] | None:
        """The next event, or None after ``timeout`` seconds without one."""
        ...

    async def close(self) -> None:
        """Stop receiving."""
        ...


class EventBus(Protocol):
    """Publish from workers; subscribe from the API."""

    def publish(self, job_id: str, event: dict[str, Any]) -> None:
        """Send one event to every subscriber of ``job_id`` (never raises)."""
        ...

    async def subscribe(self, job_id: str) -> Subscription:
        """Start receiving ``job_id``'s events (events published before this call are missed)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class _LocalSub:
    def __init__(self, bus: LocalBus, job_id: str) -> None:
        self.bus, self.job_id = bus, job_id
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=10000)

    def push(self, event: dict[str, Any]) -> None:
        def put() -> None:
            if not self.queue.full():
                self.queue.put_nowait(event)

        with contextlib.suppress(RuntimeError):  # loop closed: the client went away
            self.loop.call_soon_threadsafe(put)

    async def get(self, timeout: float) -> dict[str, Any] | None:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None

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

    async def subscribe(self, job_id: str) -> Subscription:
        sub = _LocalSub(self, job_id)
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


class _RedisSub:
    def __init__(self, client: Any, pubsub: Any) -> None:
        self.client, self.pubsub = client, pubsub

    async def get(self, timeout: float) -> dict[str, Any] | None:
        msg = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
        if msg is None or msg.get("type") != "message":
            return None
        data: dict[str, Any] = json.loads(msg["data"])
        return data

    async def close(self) -> None:
        try:
            await self.pubsub.aclose()
            await self.client.aclose()
        except Exception:  # pragma: no cover - connection already gone
            pass


class RedisBus:
    """Events through Redis pub/sub (Celery queue: workers in other processes or hosts)."""

    def __init__(self, url: str) -> None:
        import redis

        self.url = url
        self._client = redis.Redis.from_url(url)

    def publish(self, job_id: str, event: dict[str, Any]) -> None:
        try:
            self._client.publish(_channel(job_id), json.dumps(event))
        except Exception as exc:  # events are best effort; the store has the truth
            log.warning("could not publish event for job %s: %s", job_id, exc)

    async def subscribe(self, job_id: str) -> Subscription:
        import redis.asyncio as aredis

        client = aredis.Redis.from_url(self.url)
        pubsub = client.pubsub()
        await pubsub.subscribe(_channel(job_id))
        return _RedisSub(client, pubsub)

    def close(self) -> None:
        self._client.close()


def make_bus(queue: str, redis_url: str) -> EventBus:
    """The bus matching a queue kind ("embedded" -> LocalBus, "celery" -> RedisBus)."""
    return RedisBus(redis_url) if queue == "celery" else LocalBus()
