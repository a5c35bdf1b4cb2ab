"""Per-session bookkeeping shared by engines: each object's 3D mask, prompts and anchor slices.

An *anchor* is a slice whose mask the user determined (prompts or an edit); propagation and
refinement never overwrite an anchor other than the one they start from. Pure numpy.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.ism, segloop.train, segloop.eval, segloop.jobs, segloop.datastore (the layer contract,
pyproject.toml).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from segloop.types import BoolArray, Prompts

__all__ = ["ObjectState", "SessionState"]


@dataclass
class ObjectState:
    """One object's state. mask: ``(X, Y, Z)`` bool; prompts: per anchored slice."""

    mask: BoolArray
    prompts: dict[int, Prompts] = field(default_factory=dict)
    anchors: set[int] = field(default_factory=set)
    #: the slice range (first, last; None: open) the running propagation may visit: set by
    #: every ``propagate`` / ``refine`` call (:meth:`SessionState.bound`), so it stops there
    bounds: tuple[int | None, int | None] = (None, None)

    def span(self, z: int, direction: int) -> range:
        """Slices from z (exclusive) in ``direction`` (+1/-1) up to the next anchor (exclusive),
        and never past the end of :attr:`bounds` in that direction."""
        nz = self.mask.shape[2]
        end = nz if direction > 0 else -1
        stops = [a for a in self.anchors if (a - z) * direction > 0]
        if stops:
            end = min(stops) if direction > 0 else max(stops)
        first, last = self.bounds
        if direction > 0 and last is not None:
            end = max(min(end, last + 1), z + 1)
        elif direction < 0 and first is not None:
            end = min(max(end, first - 1), z - 1)
        return range(z + direction, end, direction)


@dataclass
class SessionState:
    """All objects of one session, created lazily on first use."""

    shape: tuple[int, int, int]
    objects: dict[int, ObjectState] = field(default_factory=dict)

    def bound(self, object_id: int, first: int | None, last: int | None) -> ObjectState:
        """The state of ``object_id`` with the slice range of the propagation about to run
        (``first`` / ``last`` axial slices, inclusive; None leaves that end open)."""
        st = self.get(object_id)
        st.bounds = (first, last)
        return st

    def get(self, object_id: int) -> ObjectState:
        """The state of ``object_id``, created empty when new."""
        st = self.objects.get(object_id)
        if st is None:
            st = ObjectState(mask=np.zeros(self.shape, dtype=bool))
            self.objects[object_id] = st
        return st

    def set_slice(self, object_id: int, z: int, mask2d: BoolArray, prompts: Prompts | None) -> None:
        """Store a user-determined slice: mask, prompts (if any), and make it an anchor."""
        st = self.get(object_id)
        st.mask[:, :, z] = mask2d
        st.anchors.add(z)
        if prompts is not None:
            st.prompts[z] = prompts

    def set_mask(self, object_id: int, mask3d: BoolArray) -> None:
        """Replace an object's 3D mask; every non-empty slice becomes an anchor."""
        st = self.get(object_id)
        st.mask = np.asarray(mask3d, dtype=bool).copy()
        st.anchors = {int(z) for z in np.flatnonzero(st.mask.any(axis=(0, 1)))}
        st.prompts = {}
