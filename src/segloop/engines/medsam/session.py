"""MedSAM sessions on one volume: box-prompted slices and slice-by-slice propagation.

MedSAM v1 is a 2D model with no memory, so a volume is segmented as MedSAM's users do it: the
key slice from the user's box (± points as SAM point prompts), then slice by slice outwards,
each slice prompted with the box of its neighbour's mask grown by ``margin`` pixels; a
direction stops when the mask vanishes or shrinks below ``max(min_area, stop_ratio x the
neighbour's area)`` pixels (the remaining slices of that direction are yielded empty).
Corrections re-anchor: the prompts are added to the slice's (a box replaces the box; a slice
without prompts is prompted with its current mask's box), the slice is decoded again and the
object re-propagated from it up to the neighbouring anchors.

Slices are scaled to uint8 once (CT with a window, other modalities by percentiles, as the
SAM 2 engines do; :func:`segloop.engines.sam2.preprocess.to_uint8_volume`) and shown to the
model as ``(H=Y, W=X)`` images in the radiological view (:mod:`segloop.io.radiological`:
anterior up, the patient's right on the left, as MedSAM's users' LPS-stored slices look), so a
canonical ``(x, y)`` is the image's (column, row) = ``(X-1-x, Y-1-y)``.
Embeddings are kept in a per-session LRU cache. Imports torch (through the predictor);
must not import FastAPI, Celery or the CLI.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

import numpy as np

from segloop.engines.medsam.predictor import Embedding, MedSAMPredictor
from segloop.engines.medsam.preprocess import box_of_mask
from segloop.engines.sam2.preprocess import to_uint8_volume
from segloop.engines.state import SessionState
from segloop.errors import EngineError
from segloop.io.radiological import box_to_view, points_to_view, view_to_slice
from segloop.io.volume import Volume
from segloop.types import BoolArray, Prompts, SliceResult, validate_prompts, validate_slice

__all__ = ["MedSAMSession", "PropagationRule"]


class PropagationRule:
    """How far a propagation goes: box margin (px) and the stop rule (see module docstring)."""

    def __init__(self, margin: int = 5, min_area: int = 10, stop_ratio: float = 0.2) -> None:
        self.margin = int(margin)
        self.min_area = int(min_area)
        self.stop_ratio = float(stop_ratio)

    def stops(self, area: int, prev_area: int) -> bool:
        """True when a slice of ``area`` pixels ends the object (after one of ``prev_area``)."""
        return area < max(self.min_area, self.stop_ratio * prev_area)


class MedSAMSession:
    """One volume's interactive state for the ``medsam`` engine (canonical ``(x, y, z)`` axes)."""

    def __init__(self, predictor: MedSAMPredictor, volume: Volume, *, rule: PropagationRule,
                 window: str | tuple[float, float] | None = "auto", cache_frames: int = 16) -> None:
        can = volume.canonical()
        data = np.asarray(can.data)
        if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
            raise EngineError(f"medsam engine needs a real numeric volume, got {data.dtype}")
        window = can.meta.get("window", window)
        self._slices = to_uint8_volume(data, can.modality, window)  # (Z, H=Y, W=X)
        self._pred = predictor
        self._rule = rule
        self._state = SessionState(can.shape)
        self._cache: OrderedDict[int, Embedding] = OrderedDict()
        self._cache_frames = max(1, int(cache_frames))

    # ----------------------------------------------------------------- protocol

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
        return np.zeros(self.shape, dtype=bool) if st is None else st.mask.copy()

    def set_mask(self, mask3d: BoolArray, object_id: int = 1) -> None:
        """Replace the 3D mask (an edit); non-empty slices become anchors, prompts are dropped."""
        m = np.asarray(mask3d)
        if m.shape != self.shape:
            raise EngineError(f"mask shape {m.shape} differs from the volume's {self.shape}")
        self._state.set_mask(object_id, m.astype(bool))

    def segment_slice(self, z: int, prompts: Prompts, object_id: int = 1) -> BoolArray:
        """Segment slice z from a box and/or ± points; stores it as an anchor. ``(X, Y)`` bool."""
        validate_prompts(z, prompts, self.shape)
        m2 = self._predict(z, prompts)
        self._state.set_slice(object_id, z, m2, prompts)
        return m2.copy()

    def propagate(self, z: int, mask2d: BoolArray | None = None, object_id: int = 1, *,
                  first_slice: int | None = None, last_slice: int | None = None
                  ) -> Iterator[SliceResult]:
        """From slice z (its mask, or ``mask2d``) outwards both ways up to the next anchors
        (and no further than ``first_slice`` / ``last_slice``)."""
        validate_slice(z, self.shape)
        self._state.bound(object_id, first_slice, last_slice)
        if mask2d is not None:
            m = np.asarray(mask2d, dtype=bool)
            if m.shape != self.shape[:2]:
                raise EngineError(f"mask2d has shape {m.shape}, expected {self.shape[:2]}")
            self._state.set_slice(object_id, z, m, None)
        self._state.get(object_id).anchors.add(z)
        return self._propagate_gen(z, object_id, 0, 0)

    def refine(self, z: int, prompts: Prompts, object_id: int = 1, *,
               first_slice: int | None = None, last_slice: int | None = None
               ) -> Iterator[SliceResult]:
        """A correction on slice z (a re-anchor), then re-propagation from it both ways (no
        further than ``first_slice`` / ``last_slice``)."""
        validate_prompts(z, prompts, self.shape)
        st = self._state.bound(object_id, first_slice, last_slice)
        old = st.prompts.get(z)
        if old is not None:
            merged = old.merged(prompts)
        else:
            box = prompts.box
            if box is None:
                bb = box_of_mask(st.mask[:, :, z].T, 0)
                box = None if bb is None or bb[0] == bb[2] or bb[1] == bb[3] else bb
            merged = Prompts(box=box, points=prompts.points, labels=prompts.labels)
        m2 = self._predict(z, merged)
        self._state.set_slice(object_id, z, m2, merged)
        return self._propagate_gen(z, object_id, 1, 1, first=SliceResult(z, m2.copy(), 1, 1))

    # ----------------------------------------------------------------- work

    def _embedding(self, z: int) -> Embedding:
        emb = self._cache.get(z)
        if emb is None:
            emb = self._pred.encode(self._slices[z])
            self._cache[z] = emb
            while len(self._cache) > self._cache_frames:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(z)
        return emb

    def _predict(self, z: int, prompts: Prompts) -> BoolArray:
        """The ``(X, Y)`` mask of slice z for prompts in canonical (x, y), mapped to the view."""
        if prompts.box is None and prompts.points.shape[0] == 0:
            return np.zeros(self.shape[:2], dtype=bool)
        xy = (self.shape[0], self.shape[1])
        box = None if prompts.box is None else tuple(int(v) for v in box_to_view(prompts.box, xy))
        pts = points_to_view(prompts.points, xy).astype(np.int64) if len(prompts.points) \
            else prompts.points
        view = Prompts(box=box, points=pts, labels=prompts.labels)  # type: ignore[arg-type]
        hw = self._pred.predict(self._embedding(z), view)
        return view_to_slice(np.asarray(hw, dtype=bool))

    def _propagate_gen(self, z: int, object_id: int, done0: int, extra: int,
                       first: SliceResult | None = None) -> Iterator[SliceResult]:
        st = self._state.get(object_id)
        spans = [st.span(z, +1), st.span(z, -1)]
        total = extra + sum(len(s) for s in spans)
        done = done0
        if first is not None:
            yield SliceResult(first.z, first.mask, done, total)
        for span in spans:
            prev = st.mask[:, :, z].copy()
            stopped = not prev.any()
            for s in span:
                m = np.zeros(self.shape[:2], dtype=bool)
                if not stopped:
                    bb = box_of_mask(prev.T, self._rule.margin)
                    if bb is not None and bb[0] < bb[2] and bb[1] < bb[3]:
                        m = self._predict(s, Prompts(box=bb))
                    if self._rule.stops(int(m.sum()), int(prev.sum())):
                        m[:] = False
                        stopped = True
                st.mask[:, :, s] = m
                prev = m
                done += 1
                yield SliceResult(s, m.copy(), done, total)
