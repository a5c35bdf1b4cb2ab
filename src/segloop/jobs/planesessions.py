"""A job's engine sessions, one per plane prompts were drawn on, kept in step.

Every engine segments and propagates along its volume's third (axial) axis. A prompt drawn on
a coronal or sagittal slice runs in a session opened on a *view* of the canonical volume whose
slice axis is the prompt's axis (:meth:`segloop.types.Plane.to_view`: coronal sees
``(X, Z, Y)``, sagittal ``(Y, Z, X)``, spacing permuted alike), so every engine (classic,
MedSAM, the SAM 2 family) propagates along any axis without knowing it, and the result is
transposed back. :class:`PlaneSessions` holds those sessions (opened on first use) and which
one holds each object's latest mask; before a step runs in a view, objects changed in another
view since are copied in with ``set_mask`` (an engine treats that like a brush edit). A job
prompted on axial slices only has one view, the canonical volume itself: nothing is copied.

Used by segloop.jobs.runner; must not import the runner, the queues, FastAPI, Celery or torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from segloop.engines.base import Session
from segloop.io.volume import Volume
from segloop.jobs.slicerange import range_kwargs
from segloop.types import BoolArray, Plane, Prompts, SliceResult

__all__ = ["PlaneSessions", "plane_of", "view_volume"]


def plane_of(op: dict[str, Any]) -> Plane:
    """The plane a step was drawn on (steps recorded before planes existed are axial)."""
    return Plane(op.get("axis") or Plane.AXIAL)


def view_volume(vol: Volume, plane: Plane) -> Volume:
    """``vol`` (canonical) seen with ``plane``'s slice axis last: the voxels transposed into a
    contiguous array, the affine a canonical one with the spacing permuted alike (engines read
    the spacing from it and would re-orient any other)."""
    if plane is Plane.AXIAL:
        return vol
    sp = np.asarray(vol.spacing, np.float64)[list(plane.order)]
    affine = np.diag([*sp.tolist(), 1.0])
    affine[:3, 3] = vol.affine[:3, 3]
    return replace(vol, data=np.ascontiguousarray(plane.to_view(vol.data)), affine=affine,
                   header=None)


class PlaneSessions:
    """The sessions of one job, one per plane (a :class:`Session` itself, on the axial view).

    ``open_view(plane)`` opens an engine session on that plane's view of the volume."""

    def __init__(self, open_view: Callable[[Plane], Session], shape: tuple[int, int, int]
                 ) -> None:
        self._open_view = open_view
        self._shape = shape
        self.views: dict[Plane, Session] = {}
        self._owner: dict[int, Plane] = {}  # the view holding each object's latest mask
        self._gen: dict[int, int] = {}  # bumped whenever an object's mask changes
        self._seen: dict[Plane, dict[int, int]] = {}  # the generation each view holds

    def view(self, plane: Plane) -> Session:
        """The session of ``plane`` (opened on first use), holding every object's latest mask."""
        s = self.views.get(plane)
        if s is None:
            s = self.views[plane] = self._open_view(plane)
            self._seen[plane] = {}
        seen = self._seen[plane]
        for oid, g in self._gen.items():
            if seen.get(oid) != g:
                m = self.mask(oid)
                if m.any() or oid in s.objects():
                    s.set_mask(np.ascontiguousarray(plane.to_view(m)), oid)
                seen[oid] = g
        return s

    def changed(self, plane: Plane, object_ids: list[int]) -> None:
        """Record that a step in ``plane``'s session changed these objects."""
        seen = self._seen.setdefault(plane, {})
        for oid in object_ids:
            g = self._gen[oid] = self._gen.get(oid, 0) + 1
            self._owner[oid] = plane
            seen[oid] = g

    # ------------------------------------------------------------------ the Session protocol
    @property
    def shape(self) -> tuple[int, int, int]:
        """Canonical volume shape ``(X, Y, Z)``."""
        return self._shape

    def objects(self) -> list[int]:
        """Ids of the objects any view has masks for."""
        ids = set(self._owner)
        for s in self.views.values():
            ids.update(s.objects())
        return sorted(ids)

    def mask(self, object_id: int = 1) -> BoolArray:
        """An object's latest ``(X, Y, Z)`` mask (a view of its session's array)."""
        plane = self._owner.get(object_id)
        if plane is None:  # not changed through this class: the first view that has it
            plane = next((p for p, s in self.views.items() if object_id in s.objects()), None)
        if plane is None:
            return np.zeros(self._shape, bool)
        return plane.from_view(np.asarray(self.views[plane].mask(object_id), bool))

    def set_mask(self, mask3d: BoolArray, object_id: int = 1) -> None:
        """Replace an object's mask (canonical axes) in the view that holds it (axial if none)."""
        plane = self._owner.get(object_id, Plane.AXIAL)
        self.view(plane).set_mask(np.ascontiguousarray(plane.to_view(mask3d)), object_id)
        self.changed(plane, [object_id])

    def segment_slice(self, z: int, prompts: Prompts, object_id: int = 1) -> BoolArray:
        """Segment axial slice z (see :meth:`view` for the other planes)."""
        out = self.view(Plane.AXIAL).segment_slice(z, prompts, object_id)
        self.changed(Plane.AXIAL, [object_id])
        return out

    def propagate(self, z: int, mask2d: BoolArray | None = None, object_id: int = 1, *,
                  first_slice: int | None = None, last_slice: int | None = None
                  ) -> Iterator[SliceResult]:
        """Propagate along z from axial slice z, within the slice range."""
        rng = range_kwargs(first_slice, last_slice)
        try:
            yield from self.view(Plane.AXIAL).propagate(z, mask2d, object_id, **rng)
        finally:
            self.changed(Plane.AXIAL, [object_id])

    def refine(self, z: int, prompts: Prompts, object_id: int = 1, *,
               first_slice: int | None = None, last_slice: int | None = None
               ) -> Iterator[SliceResult]:
        """Correct axial slice z and re-propagate along z, within the slice range."""
        rng = range_kwargs(first_slice, last_slice)
        try:
            yield from self.view(Plane.AXIAL).refine(z, prompts, object_id, **rng)
        finally:
            self.changed(Plane.AXIAL, [object_id])
