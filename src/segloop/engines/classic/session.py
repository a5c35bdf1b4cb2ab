"""One volume's interactive state for the classic engine: the Session protocol's methods.

Must not import torch, FastAPI, Celery or the CLI.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from segloop.engines.classic.context import ClassicContext
from segloop.engines.classic.fat import looks_like_hu
from segloop.engines.classic.options import ClassicOptions
from segloop.engines.classic.propagation import propagate_delta, propagate_from, span_total
from segloop.engines.classic.segment2d import prompted_slice
from segloop.engines.state import SessionState
from segloop.errors import EngineError
from segloop.io.volume import Volume
from segloop.types import BoolArray, Prompts, SliceResult, validate_prompts, validate_slice

__all__ = ["ClassicSession"]


class ClassicSession:
    """One volume's interactive state for the classic engine (canonical (x, y, z) axes).

    ``options``: the tuning (see :class:`ClassicOptions`; defaults when omitted).
    """

    def __init__(self, volume: Volume, options: ClassicOptions | None = None) -> None:
        can = volume.canonical()
        data = np.asarray(can.data)
        if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
            raise EngineError(f"classic engine needs a real numeric volume, got {data.dtype}")
        self.options = ClassicOptions() if options is None else options
        picture = can.source_format == "image2d"  # a 2D picture's one-slice volume
        if picture and (self.options.ring_class is not None or self.options.edge_mid is not None):
            # two volume rules a picture skips, measured on the 2D photo set
            # (benchmarks/devset.md): the ring check fired on 24 of 141 pictures and lowered 21
            # (eleventh pass; on volumes it gains); the half-way cut lowered dermoscopy 0.929 ->
            # 0.918 (twelfth pass, c18brain: a photo's reference outline takes a faint edge)
            self.options = replace(self.options, ring_class=None, edge_mid=None)
        sx, sy, sz = can.spacing
        self._ctx = ClassicContext(data.astype(np.float32, copy=False),
                                   (float(sx), float(sy), float(sz)), self.options)
        self._ctx.picture = picture
        self._modality = can.modality
        self._ctx.hu = looks_like_hu(can.modality, self._ctx.img)
        self._state = SessionState(tuple(int(s) for s in data.shape))  # type: ignore[arg-type]
        # a corrected propagated slice: its mask before the first correction, per (object, z)
        self._base: dict[tuple[int, int], BoolArray] = {}

    @property
    def shape(self) -> tuple[int, int, int]:
        """Canonical volume shape ``(X, Y, Z)``."""
        return self._state.shape

    def objects(self) -> list[int]:
        """Ids of objects with a non-empty mask."""
        return sorted(k for k, st in self._state.objects.items() if st.mask.any())

    def mask(self, object_id: int = 1) -> BoolArray:
        """The current ``(X, Y, Z)`` bool mask of ``object_id`` (a copy)."""
        st = self._state.objects.get(object_id)
        if st is None:
            return np.zeros(self.shape, dtype=bool)
        return st.mask.copy()

    def set_mask(self, mask3d: BoolArray, object_id: int = 1) -> None:
        """Replace the 3D mask (an edit); non-empty slices become anchors, prompts are dropped."""
        m = np.asarray(mask3d)
        if m.shape != self.shape:
            raise EngineError(f"mask shape {m.shape} differs from the volume's {self.shape}")
        self._state.set_mask(object_id, m.astype(bool))
        for key in [k for k in self._base if k[0] == object_id]:
            del self._base[key]
        if m.any() and object_id not in self._ctx.models:
            z = int(np.argmax(m.sum(axis=(0, 1))))
            self._ctx.learn_from_mask(object_id, z, m[:, :, z].astype(bool))

    def segment_slice(self, z: int, prompts: Prompts, object_id: int = 1) -> BoolArray:
        """Segment slice z from a box and/or ± points; stores it as an anchor. ``(X, Y)`` bool."""
        validate_prompts(z, prompts, self.shape)
        if prompts.box is None and not (prompts.labels == 1).any():
            raise EngineError("give a box or at least one positive point to start an object")
        self._base.pop((object_id, z), None)
        m2 = prompted_slice(self._ctx, object_id, z, prompts, base=None)
        self._state.set_slice(object_id, z, m2, prompts)
        return m2.copy()

    def propagate(self, z: int, mask2d: BoolArray | None = None, object_id: int = 1, *,
                  first_slice: int | None = None, last_slice: int | None = None
                  ) -> Iterator[SliceResult]:
        """Fill the other slices from slice z, both directions, up to the next anchors (and
        no further than ``first_slice`` / ``last_slice``)."""
        validate_slice(z, self.shape)
        self._state.bound(object_id, first_slice, last_slice)
        if mask2d is not None:
            m = np.asarray(mask2d, dtype=bool)
            if m.shape != self.shape[:2]:
                raise EngineError(f"mask2d shape {m.shape} differs from the slice's {self.shape[:2]}")
            st = self._state.get(object_id)
            st.mask[:, :, z] = m
            st.anchors.add(z)
            if object_id not in self._ctx.models and m.any():
                self._ctx.learn_from_mask(object_id, z, m)
        return propagate_from(self._ctx, self._state, z, object_id)

    def refine(self, z: int, prompts: Prompts, object_id: int = 1, *,
               first_slice: int | None = None, last_slice: int | None = None
               ) -> Iterator[SliceResult]:
        """Add correction prompts on slice z, recompute it, and re-propagate from it (no
        further than ``first_slice`` / ``last_slice``)."""
        validate_prompts(z, prompts, self.shape)
        st = self._state.bound(object_id, first_slice, last_slice)
        old = st.prompts.get(z)
        merged = prompts if old is None else old.merged(prompts)
        if old is None and (object_id, z) not in self._base:
            # a correction on a propagated slice acts on its current mask
            self._base[(object_id, z)] = st.mask[:, :, z].copy()
        base = self._base.get((object_id, z))
        if object_id not in self._ctx.models and merged.box is None and not (merged.labels == 1).any():
            raise EngineError("this object has no mask yet: start it with a box or a positive point")
        before = st.mask[:, :, z].copy()
        m2 = prompted_slice(self._ctx, object_id, z, merged, base=base)
        self._state.set_slice(object_id, z, m2, merged)
        return self._refine_gen(z, before, m2, object_id)

    def _refine_gen(self, z: int, before: BoolArray, m2: BoolArray,
                    object_id: int) -> Iterator[SliceResult]:
        total = 1 + span_total(self._state, z, object_id)
        yield SliceResult(z=z, mask=m2.copy(), done=1, total=total)
        yield from propagate_delta(self._ctx, self._state, z, before, object_id, offset=1)
