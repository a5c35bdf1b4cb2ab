"""Server-Sent Events: a job's (or one task's) progress as a ``text/event-stream`` body.

Must not import routes, engines, torch, the worker or the web UI.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from segloop.jobs.records import JobStatus, TaskRecord
from segloop.jobs.states import TERMINAL, event_for_state
from segloop.jobs.store import Principal

from .deps import Services

__all__ = ["event_stream", "sse"]


def sse(event: dict[str, Any]) -> bytes:
    """One SSE frame: ``event: TYPE`` and the event as JSON data."""
    return f"event: {event.get('type', 'message')}\ndata: {json.dumps(event)}\n\n".encode()


async def event_stream(svc: Services, sub: Any, job_id: str, who: Principal,
                       task_id: str | None, request: Request, first: JobStatus | TaskRecord
                       ) -> AsyncIterator[bytes]:
    """``first``: the job status (no ``task_id``) or the task, read after subscribing."""
    try:
        yield sse({**first.as_dict(), "type": "status"})
        if task_id is not None and first.state in TERMINAL:
            yield sse({**first.as_dict(), "type": event_for_state(first.state)})
            return
        last = time.monotonic()
        while True:
            ev = await sub.get(timeout=1.0)
            if ev is None:
                if await request.is_disconnected():
                    return
                if time.monotonic() - last > 15:
                    last = time.monotonic()
                    yield b": keep-alive\n\n"
                if task_id is not None:  # a lost event (e.g. broker blip) must not hang us
                    t = await run_in_threadpool(svc.store.task_for, job_id, task_id, who)
                    if t.state in TERMINAL:
                        yield sse({**t.as_dict(), "type": event_for_state(t.state)})
                        return
                continue
            chunk = []  # the event and those that came with it: one write, not one each
            for e in (ev, *sub.ready()):
                chunk.append(sse(e))
                if task_id is not None and e.get("task_id") == task_id and \
                        e.get("type") in ("done", "failed", "cancelled"):
                    yield b"".join(chunk)
                    return
            yield b"".join(chunk)
    finally:
        await sub.close()
