"""The slice range of a propagation or refinement: the object stays between a first and a
last axial slice (``first_slice`` / ``last_slice`` in the task's parameters).

This is how an annotator stops a leak whatever the engine. The range goes into the session's
``propagate`` / ``refine`` call (``first_slice`` / ``last_slice``, :meth:`SliceRange.kwargs`):
every engine stops its propagation there, as at an anchor, so the slices beyond are never
computed (the task's progress total counts only the slices inside). What an engine still
yields outside the range (the start slice itself when it lies outside) is shown empty, and the
object is cleared outside the range when the engine is done
(:func:`segloop.edit.regions.keep_slices` on the session's mask, written back with
``set_mask``). Must not import api, worker, torch or the web UI.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

import numpy as np

from segloop.edit.regions import keep_slices
from segloop.engines.base import Session
from segloop.types import SliceResult

__all__ = ["SliceRange", "range_kwargs"]


def range_kwargs(first_slice: int | None, last_slice: int | None) -> dict[str, int | None]:
    """A slice range as the keyword arguments of ``Session.propagate`` / ``refine``: none for
    an open range, so a session written before the range keywords still runs."""
    if first_slice is None and last_slice is None:
        return {}
    return {"first_slice": first_slice, "last_slice": last_slice}


class SliceRange:
    """``with SliceRange.of(op, session, object_id) as r: drive(..., r.filter(cb))``."""

    def __init__(self, session: Session, object_id: int, first: int | None,
                 last: int | None) -> None:
        self.session, self.object_id = session, object_id
        self.first, self.last = first, last

    @classmethod
    def of(cls, op: dict[str, Any], session: Session, object_id: int) -> SliceRange:
        """The range a step's parameters ask for (open ends when absent)."""
        f, la = op.get("first_slice"), op.get("last_slice")
        return cls(session, object_id, None if f is None else int(f),
                   None if la is None else int(la))

    @property
    def open(self) -> bool:
        """True when the range limits nothing."""
        return self.first is None and self.last is None

    def kwargs(self) -> dict[str, int | None]:
        """The range as the keyword arguments of ``Session.propagate`` / ``refine``
        (:func:`range_kwargs`)."""
        return range_kwargs(self.first, self.last)

    def inside(self, z: int) -> bool:
        """Whether axial slice ``z`` is in the range."""
        return (self.first is None or z >= self.first) and (self.last is None or z <= self.last)

    def filter(self, cb: Callable[[SliceResult], None] | None
               ) -> Callable[[SliceResult], None] | None:
        """``cb`` with the slices outside the range made empty (the counters stay)."""
        if cb is None or self.open:
            return cb
        inner = cb

        def filtered(res: SliceResult) -> None:
            if not self.inside(res.z):  # shown empty: what the task's version will hold
                res = SliceResult(res.z, np.zeros_like(res.mask, dtype=bool), res.done,
                                  res.total)
            inner(res)
        return filtered

    def __enter__(self) -> SliceRange:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Clear the object outside the range, also after a cancel (the session keeps the
        slices it computed)."""
        if self.open:
            return
        m = np.asarray(self.session.mask(self.object_id), bool)
        if not m.any():
            return
        nz = m.shape[2]
        lo = None if self.first is None else min(self.first, nz - 1)
        hi = None if self.last is None else min(self.last, nz - 1)
        clipped = keep_slices(m.astype(np.uint8), 1, lo, hi) == 1
        if not np.array_equal(clipped, m):
            self.session.set_mask(clipped, self.object_id)
