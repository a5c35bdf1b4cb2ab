"""Progress of one running task step: the events and store updates it sends while an engine
works, rate-limited, and the run-length form of the slice masks those events carry.

Used by segloop.jobs.runner; must not import the runner, the queues, FastAPI, Celery or torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from segloop.jobs.states import EventType
from segloop.jobs.store import JobStore
from segloop.types import SliceResult

__all__ = ["StepProgress", "mask_runs"]


def mask_runs(mask: np.ndarray[Any, Any]) -> list[int]:
    """Run lengths of a 2D mask ``(X, Y)`` flattened x-fastest (NIfTI order), alternating runs
    of 0 and 1 starting with 0 (possibly a 0-length run): how progress events carry the slice
    masks the web viewer paints while a propagation runs."""
    flat = np.asarray(mask, bool).ravel(order="F")
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], change, [flat.size]))).tolist()
    return [0, *runs] if flat[0] else runs


class StepProgress:
    """Progress reporting and cancel polling of one running step, rate-limited: events at most
    20 per second (slice masks not yet published ride along), none while ``wanted()`` says
    nobody follows them, progress written to the store at most every 0.25 s (the end comes
    with the completion), the cancel flag read at most every 0.2 s."""

    def __init__(self, publish: Callable[[str, dict[str, Any]], None], store: JobStore,
                 task_id: str, job_id: str, base: dict[str, Any], object_id: int,
                 wanted: Callable[[], bool] = lambda: True) -> None:
        self.publish, self.store, self.wanted = publish, store, wanted
        self.task_id, self.job_id, self.base = task_id, job_id, base
        self.object_id = object_id
        self.start = time.monotonic()
        self.final: tuple[int, int] | None = None  # (slices done, total) of a propagation
        self.last_db = self.start  # the claim wrote the heartbeat; the first write is due later
        self.last_pub = 0.0
        self.last_cancel = self.start  # the claim read cancel_requested
        self.cancel = False
        self.pending: dict[int, list[int]] = {}  # slice masks not yet published (web viewer)

    def on_progress(self, r: SliceResult) -> None:
        """One slice done: publish (rate-limited) and now and then record progress."""
        now = time.monotonic()
        frac = r.done / r.total if r.total else 1.0
        eta = (now - self.start) / r.done * (r.total - r.done) if r.done else None
        ev = {"stage": "propagating", "progress": round(frac, 4), "slices_done": r.done,
              "slices_total": r.total, "eta_seconds": None if eta is None else round(eta, 2)}
        self.final = (int(r.done), int(r.total))
        if not self.wanted():  # nobody follows the slices (a protocol request waits for the end)
            self.pending.clear()
        else:
            self.pending[int(r.z)] = mask_runs(r.mask)
            if now - self.last_pub >= 0.05 or r.done == r.total:  # at most 20 events/s
                self.last_pub = now
                masks = dict(self.pending)
                self.pending.clear()
                self.publish(self.job_id, {**self.base, "type": EventType.PROGRESS, "z": r.z,
                                           "object_id": self.object_id, "masks": masks, **ev})
        if now - self.last_db > 0.25 and r.done < r.total:  # the end comes with completion
            self.last_db = now
            self.store.set_progress(self.task_id, **ev)

    def cancelled(self) -> bool:
        """Whether a cancel was requested (read from the store at most every 0.2 s)."""
        now = time.monotonic()
        if now - self.last_cancel > 0.2:
            self.last_cancel = now
            self.cancel = self.store.is_cancel_requested(self.task_id)
        return self.cancel
