"""A task's label map handed, inside one process, to the request that waits for it, before it is durable.

The embedded worker runs in the API's process. A protocol request that answers with the
mask its task computed (MONAI Label's ``/infer`` result file) need not wait for the version
to be durable and then read the version file back: the runner offers the composed label map
here while the version's file is being made durable (its ``fsync`` and its folder's run on a
helper thread; the offer comes once the version's rows are written, before the wait for the
file and the commit), and the request builds its answer from it while the disk works. The
request still answers only after the task's ``done`` event, which is published after the
commit, so nothing the client gets can be lost by a crash; when nothing was offered (a Celery
worker or a worker process, a task that failed first) the request reads the stored version
as before.

Offers are kept only for jobs someone watches, and a watch keeps only the offer of the task
it expects (the last one its request submitted). Offers come from worker threads; a
:class:`Watch` lives on the event loop that made it. Imports numpy and the standard library
only; must not import the store, the runner, FastAPI or torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

import numpy as np
import numpy.typing as npt

__all__ = ["LabelHandoff", "Watch"]

LabelMap = npt.NDArray[np.uint8]


class Watch:
    """One request's view of a job's offers: :meth:`expect` the task, then :meth:`wait`."""

    def __init__(self, hub: LabelHandoff, job_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.hub, self.job_id, self.loop = hub, job_id, loop
        self._expected: str | None = None
        self._early: dict[str, LabelMap] = {}  # offers that came before expect() (any task)
        self._result: asyncio.Future[LabelMap | None] = loop.create_future()

    def expect(self, task_id: str) -> None:
        """The task whose labels this watch waits for (call on the loop, after submitting)."""
        self._expected = task_id
        got = self._early.pop(task_id, None)
        self._early.clear()
        if got is not None:
            self._set(got)

    async def wait(self) -> LabelMap | None:
        """The expected task's label map, or None once the watch is closed without one."""
        return await self._result

    def close(self) -> None:
        """Stop watching (a :meth:`wait` still pending answers None)."""
        self.hub._remove(self)
        self._set(None)

    def _set(self, labels: LabelMap | None) -> None:
        if not self._result.done():
            self._result.set_result(labels)

    def _offer(self, task_id: str, labels: LabelMap) -> None:  # on the loop
        if self._expected is None:
            self._early[task_id] = labels
        elif task_id == self._expected:
            self._set(labels)


class LabelHandoff:
    """The process's offers of composed label maps, by job (see the module docstring)."""

    def __init__(self) -> None:
        self._watches: dict[str, list[Watch]] = {}
        self._lock = threading.Lock()

    def watch(self, job_id: str) -> Watch:
        """Start watching ``job_id``'s offers (call on the event loop, before submitting)."""
        w = Watch(self, job_id, asyncio.get_running_loop())
        with self._lock:
            self._watches.setdefault(job_id, []).append(w)
        return w

    def offer(self, job_id: str, task_id: str, labels: LabelMap) -> None:
        """From a worker thread: task ``task_id`` of ``job_id`` computed ``labels`` (canonical
        ``(X, Y, Z)`` uint8, the very map about to be stored; the caller must not change it
        afterwards). A dictionary look-up when nobody watches the job."""
        with self._lock:
            watches = list(self._watches.get(job_id, ()))
        for w in watches:
            with contextlib.suppress(RuntimeError):  # its loop is closed: the request is gone
                w.loop.call_soon_threadsafe(w._offer, task_id, labels)

    def _remove(self, w: Watch) -> None:
        with self._lock:
            ws = self._watches.get(w.job_id)
            if ws is not None and w in ws:
                ws.remove(w)
                if not ws:
                    del self._watches[w.job_id]
