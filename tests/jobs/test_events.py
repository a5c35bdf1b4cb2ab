"""The in-process event bus and the event stream: bursts stay in order, travel together and are
written out as one chunk; an idle wait ends after its timeout."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from segloop.api.sse import event_stream
from segloop.jobs.events import LocalBus
from segloop.jobs.records import TaskRecord
from segloop.jobs.store import LOCAL_ADMIN

JOB = "00000000-0000-0000-0000-000000000001"


def _burst(bus: LocalBus, n: int, last: str = "progress") -> None:
    def pub() -> None:
        for i in range(n):
            bus.publish(JOB, {"type": last if i == n - 1 else "progress", "task_id": "t",
                              "i": i})
    th = threading.Thread(target=pub)
    th.start()
    th.join()


def test_a_burst_arrives_in_order_and_idle_waits_time_out() -> None:
    async def main() -> None:
        bus = LocalBus()
        sub = await bus.subscribe(JOB)
        assert await sub.get(0.05) is None  # nothing published: the timeout ends the wait
        _burst(bus, 50)
        first = await sub.get(1.0)
        assert first is not None and first["i"] == 0
        assert [e["i"] for e in sub.ready()] == list(range(1, 50))
        assert sub.ready() == []
        await sub.close()
        _burst(bus, 3)  # after close: nobody listens, nothing is kept
        assert not bus.has_subscribers(JOB)

    asyncio.run(main())


def test_a_task_burst_is_one_chunk_and_the_stream_ends_at_done() -> None:
    """started, progress and done published together reach the client as one write."""
    task = TaskRecord(task_id="t", job_id=JOB, kind="initial-mask", state="queued",
                      stage="queued", progress=0.0, slices_done=0, slices_total=0,
                      eta_seconds=None, error=None, attempts=0, version=None, params={},
                      created="2026-01-01T00:00:00Z", finished=None)

    async def main() -> list[bytes]:
        bus = LocalBus()
        sub = await bus.subscribe(JOB)
        _burst(bus, 3, last="done")
        bus.publish(JOB, {"type": "progress", "task_id": "t"})  # after done: not sent
        fake: Any = None  # svc and request are used only when a wait times out
        return [c async for c in event_stream(fake, sub, JOB, LOCAL_ADMIN, "t", fake, task)]

    chunks = asyncio.run(main())
    assert len(chunks) == 2 and chunks[0].startswith(b"event: status\n")
    frames = chunks[1].split(b"\n\n")
    assert [f.split(b"\n")[0] for f in frames if f] == [b"event: progress", b"event: progress",
                                                        b"event: done"]


def test_an_ends_only_subscriber_is_not_woken_by_progress() -> None:
    """A protocol request waiting for its task takes only the task's end: progress events do
    not reach it, and a job followed only that way needs no slice masks built; a viewer's
    ordinary subscription still gets (and wants) everything."""
    async def main() -> None:
        bus = LocalBus()
        assert not bus.wants_progress(JOB)
        ends = await bus.subscribe(JOB, ends_only=True)
        assert not bus.wants_progress(JOB)
        _burst(bus, 30, last="done")
        got = await ends.get(1.0)
        assert got is not None and got["type"] == "done" and ends.ready() == []
        viewer = await bus.subscribe(JOB)
        assert bus.wants_progress(JOB)
        _burst(bus, 3, last="failed")
        assert (await ends.get(1.0) or {}).get("type") == "failed"
        seen = [await viewer.get(1.0), *viewer.ready()]
        assert [e["type"] for e in seen if e] == ["progress", "progress", "failed"]
        await viewer.close()
        assert not bus.wants_progress(JOB)
        await ends.close()

    asyncio.run(main())
