"""A SAM-Med3D session: 3D clicks on one volume, predicted one 128³ patch at a time.

How segloop's slice prompts become SAM-Med3D's 3D clicks (a box: one positive click at its
centre): :mod:`segloop.engines.sammed3d.clicks`.

Every prediction feeds all clicks of the object together with the previous low-resolution
logits (zeros on the first click), exactly as the official ``sam_model_infer`` loop does. The
patch is centred on the first positive click and kept while later clicks fall inside it
(keeping the feedback); a click outside re-centres the patch on the clicks' bounding box
(feedback restarts), or, when the clicks do not fit one patch, keeps the first positive
click's patch (clicks elsewhere are used by the neighbour patches of the tiling).
``segment_slice`` runs the 3D model and stores slice z; ``propagate`` then writes the other
slices of that same 3D result (no extra model call) up to the neighbouring anchors; ``refine``
adds clicks, predicts again and rewrites slice z and its span.

Targets larger than one patch (``max_tiles`` > 1): when the predicted mask reaches a patch face
and the volume continues there, a neighbour patch shifted by half a patch along that axis is
predicted with the user's clicks inside it, one positive click on the mask where it crossed
the face, and the previous low-res logits shifted by the same half patch as mask prompt;
repeated breadth-first up to ``max_tiles`` patches. Each voxel keeps the prediction of the patch
in which it lies most centrally (:mod:`segloop.engines.sammed3d.tiling`).
Imports torch; must not import the CLI, FastAPI or Celery.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from segloop.engines.sammed3d.clicks import Click, interior_point, prompts_to_clicks
from segloop.engines.sammed3d.model import SamMed3D
from segloop.engines.sammed3d.preprocess import PatchGrid, znormalise
from segloop.engines.sammed3d.tiling import Tile, merge_central, queue_neighbours
from segloop.engines.state import SessionState
from segloop.errors import EngineError, PromptError
from segloop.io.volume import Volume
from segloop.types import BoolArray, Prompts, SliceResult, validate_prompts, validate_slice

__all__ = ["Click", "Runtime", "SamMed3DSession", "prompts_to_clicks"]

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """The loaded model and settings shared by every session of one engine."""

    model: SamMed3D
    device: torch.device
    use_bf16: bool
    max_tiles: int
    lock: threading.RLock

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast when enabled, else nothing."""
        if self.use_bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


@dataclass
class _Prediction:
    """The last model output of one object: its patch, feedback logits, 3D mask and clicks."""

    grid: PatchGrid
    low_res: torch.Tensor
    mask: BoolArray
    clicks: tuple[Click, ...]
    tiles: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


class SamMed3DSession:
    """One volume's SAM-Med3D state; implements :class:`segloop.engines.base.Session`.

    Masks are ``(X, Y)`` / ``(X, Y, Z)`` bool on the volume's canonical grid.
    """

    def __init__(self, runtime: Runtime, volume: Volume, cache_patches: int = 4) -> None:
        self._rt = runtime
        canon = volume.canonical()
        self._data = np.asarray(canon.data)
        self._shape: tuple[int, int, int] = (int(self._data.shape[0]), int(self._data.shape[1]),
                                             int(self._data.shape[2]))
        sp = canon.spacing
        self._spacing = (float(sp[0]), float(sp[1]), float(sp[2]))
        self._state = SessionState(self._shape)
        self._pred: dict[int, _Prediction] = {}
        self._embeddings: OrderedDict[tuple[int, int, int], torch.Tensor] = OrderedDict()
        self._cache_patches = max(1, cache_patches)
        cfg = runtime.model.config
        self._size = cfg.image_size
        self._target = cfg.spacing_mm

    # ------------------------------------------------------------------ protocol

    @property
    def shape(self) -> tuple[int, int, int]:
        """Canonical volume shape ``(X, Y, Z)``."""
        return self._shape

    def segment_slice(self, z: int, prompts: Prompts, object_id: int = 1) -> BoolArray:
        """Predict the object in 3D from the prompts (and those of its other slices); store slice z."""
        validate_prompts(z, prompts, self._shape)
        st = self._state.get(object_id)
        if set(st.prompts) <= {z}:  # a fresh interaction: no feedback from an older prediction
            self._pred.pop(object_id, None)
        st.prompts[z] = prompts
        pred = self._predict(object_id)
        m = pred.mask[:, :, z].copy()
        self._state.set_slice(object_id, z, m, prompts)
        return m

    def propagate(self, z: int, mask2d: BoolArray | None = None, object_id: int = 1, *,
                  first_slice: int | None = None, last_slice: int | None = None
                  ) -> Iterator[SliceResult]:
        """Write the object's 3D prediction onto the slices between z's neighbouring anchors
        (and no further than ``first_slice`` / ``last_slice``)."""
        validate_slice(z, self._shape)
        st = self._state.bound(object_id, first_slice, last_slice)
        if mask2d is not None:
            m = np.asarray(mask2d, dtype=bool)
            if m.shape != self._shape[:2]:
                raise PromptError(
                    f"mask2d has shape {m.shape} but slices of this volume are {self._shape[:2]}"
                )
            if not m.any():
                raise PromptError(f"mask2d of slice {z} is empty: nothing to propagate")
            self._state.set_slice(object_id, z, m, None)
            x, y = interior_point(m)
            st.prompts[z] = Prompts.make(points=[(x, y)], labels=[1])
            self._pred.pop(object_id, None)
        elif z not in st.prompts:
            if not st.mask[:, :, z].any():
                raise EngineError(
                    f"slice {z} of object {object_id} has no mask to propagate: segment it first"
                )
            x, y = interior_point(st.mask[:, :, z])
            st.prompts[z] = Prompts.make(points=[(x, y)], labels=[1])
        st.anchors.add(z)
        pred = self._predict(object_id)
        return self._write_spans(object_id, z, pred.mask, first=False)

    def refine(self, z: int, prompts: Prompts, object_id: int = 1, *,
               first_slice: int | None = None, last_slice: int | None = None
               ) -> Iterator[SliceResult]:
        """Add ± clicks on slice z (a box replaces the old box), predict again with the previous
        low-res logits as mask prompt; yields slice z, then the slices up to the neighbouring
        anchors (no further than ``first_slice`` / ``last_slice``)."""
        validate_prompts(z, prompts, self._shape)
        st = self._state.bound(object_id, first_slice, last_slice)
        old = st.prompts.get(z)
        st.prompts[z] = old.merged(prompts) if old is not None else prompts
        if object_id not in self._pred and st.mask.any():
            self._pred_from_mask(object_id)
        pred = self._predict(object_id)
        self._state.set_slice(object_id, z, pred.mask[:, :, z].copy(), st.prompts[z])
        return self._write_spans(object_id, z, pred.mask, first=True)

    def mask(self, object_id: int = 1) -> BoolArray:
        """The current ``(X, Y, Z)`` bool mask of one object (all False if never segmented)."""
        st = self._state.objects.get(object_id)
        return np.zeros(self._shape, dtype=bool) if st is None else st.mask.copy()

    def set_mask(self, mask3d: BoolArray, object_id: int = 1) -> None:
        """Replace an object's 3D mask (an edit); every non-empty slice becomes an anchor."""
        m = np.asarray(mask3d, dtype=bool)
        if m.shape != self._shape:
            raise PromptError(f"mask has shape {m.shape} but the volume is {self._shape}")
        self._state.set_mask(object_id, m)
        self._pred.pop(object_id, None)

    def objects(self) -> list[int]:
        """Ids of the objects with a state in this session."""
        return sorted(self._state.objects)

    def prediction_info(self, object_id: int = 1) -> dict[str, Any]:
        """The last prediction's patch start, patch count and clicks (diagnostics, benchmarks)."""
        p = self._pred.get(object_id)
        if p is None:
            return {}
        return {"start": p.grid.start, "tiles": p.tiles, "clicks": [c.__dict__ for c in p.clicks]}

    # ------------------------------------------------------------------ internals

    def _write_spans(self, object_id: int, z: int, pred: BoolArray, first: bool
                     ) -> Iterator[SliceResult]:
        st = self._state.get(object_id)
        order = [k for d in (1, -1) for k in st.span(z, d)]
        total = len(order) + (1 if first else 0)

        def gen() -> Iterator[SliceResult]:
            done = 0
            if first:
                done += 1
                yield SliceResult(z=z, mask=st.mask[:, :, z].copy(), done=done, total=total)
            for k in order:
                st.mask[:, :, k] = pred[:, :, k]
                done += 1
                yield SliceResult(z=k, mask=pred[:, :, k].copy(), done=done, total=total)

        return gen()

    def _clicks(self, object_id: int) -> tuple[Click, ...]:
        st = self._state.get(object_id)
        return tuple(c for z in sorted(st.prompts) for c in prompts_to_clicks(z, st.prompts[z]))

    def _grid_for(self, clicks: tuple[Click, ...]) -> PatchGrid:
        pos = np.array([(c.x, c.y, c.z) for c in clicks if c.label == 1], dtype=np.float64)
        pts = pos if pos.size else np.array([(c.x, c.y, c.z) for c in clicks], np.float64)
        first = PatchGrid.around(self._shape, self._spacing, pts[0], self._target, self._size)
        if first.contains(pts).all():
            return first
        centre = (pts.min(axis=0) + pts.max(axis=0)) / 2
        both = PatchGrid.around(self._shape, self._spacing, centre, self._target, self._size)
        # clicks farther apart than one patch: keep the first positive click's patch (tiling
        # and the neighbour patches take the clicks that fall in them)
        return both if both.contains(pts).all() else first

    def _embedding(self, grid: PatchGrid) -> torch.Tensor:
        key = grid.start
        emb = self._embeddings.get(key)
        if emb is not None:
            self._embeddings.move_to_end(key)
            return emb
        patch = znormalise(grid.sample(self._data))
        x = torch.from_numpy(patch)[None, None].to(self._rt.device)
        with self._rt.lock, torch.no_grad(), self._rt.autocast():
            emb = self._rt.model.encode(x).float()
        self._embeddings[key] = emb
        while len(self._embeddings) > self._cache_patches:
            self._embeddings.popitem(last=False)
        return emb

    def _decode(self, grid: PatchGrid, clicks: list[tuple[int, int, int, int]],
                feedback: torch.Tensor) -> torch.Tensor:
        emb = self._embedding(grid)
        dev = self._rt.device
        pts = torch.tensor([[c[:3] for c in clicks]], dtype=torch.float32, device=dev)
        lab = torch.tensor([[c[3] for c in clicks]], dtype=torch.int64, device=dev)
        with self._rt.lock, torch.no_grad(), self._rt.autocast():
            low, _ = self._rt.model.decode(emb, pts, lab, feedback.to(dev))
        return low.float()

    def _zeros_low(self) -> torch.Tensor:
        n = self._rt.model.config.low_res
        return torch.zeros(1, 1, n, n, n, device=self._rt.device)

    def _pred_from_mask(self, object_id: int) -> None:
        """Feedback logits from an edited mask (no earlier prediction): ±4 at low resolution."""
        clicks = self._clicks(object_id)
        grid = self._grid_for(clicks)
        m = grid.sample(self._state.get(object_id).mask.astype(np.float32))
        n = self._rt.model.config.low_res
        low = F.adaptive_avg_pool3d(torch.from_numpy(m)[None, None], n)
        low = (low > 0.5).float() * 8.0 - 4.0
        self._pred[object_id] = _Prediction(grid, low.to(self._rt.device),
                                            self._state.get(object_id).mask.copy(), ())

    def _predict(self, object_id: int) -> _Prediction:
        clicks = self._clicks(object_id)
        if not clicks:
            raise EngineError(f"object {object_id} has no prompts: segment a slice first")
        if not any(c.label == 1 for c in clicks):
            raise PromptError("SAM-Med3D needs at least one positive click or a box")
        prev = self._pred.get(object_id)
        if prev is not None and prev.clicks == clicks:
            return prev
        pts = np.array([(c.x, c.y, c.z) for c in clicks], np.float64)
        if prev is not None and prev.grid.contains(pts).all():
            grid, feedback = prev.grid, prev.low_res
        else:
            grid, feedback = self._grid_for(clicks), self._zeros_low()
        pred = self._run_tiles(grid, clicks, feedback)
        self._pred[object_id] = pred
        return pred

    def _run_tiles(self, grid: PatchGrid, clicks: tuple[Click, ...], feedback: torch.Tensor
                   ) -> _Prediction:
        model = self._rt.model
        out = np.zeros(self._shape, dtype=bool)
        best: npt.NDArray[np.uint8] | None = None
        queue: list[Tile] = [(grid, feedback, [])]
        seen = {grid.start}
        first_low: torch.Tensor | None = None
        tiles = 0
        cl = np.array([(c.x, c.y, c.z) for c in clicks], np.float64)
        labels = [c.label for c in clicks]
        while queue and tiles < max(1, self._rt.max_tiles):
            g, fb, extra = queue.pop(0)
            inside = g.contains(cl)
            pp = g.patch_points(cl)
            own = [(int(p[0]), int(p[1]), int(p[2]), lab)
                   for p, lab, ok in zip(pp, labels, inside, strict=True) if ok]
            if not any(c[3] == 1 for c in own + extra):
                continue  # no positive click in this patch: nothing to segment there
            low = self._decode(g, own + extra, fb)
            if first_low is None:
                first_low = low
            with torch.no_grad():
                hr = (model.upscale(low)[0, 0] > 0).cpu().numpy()
            tiles += 1
            if tiles == 1 and self._rt.max_tiles <= 1:
                g.paste(hr, out)
                break
            best = merge_central(g, hr, out, best)
            queue_neighbours(g, hr, low, queue, seen)
        if tiles > 1:
            log.info("SAM-Med3D: %d patches for one object", tiles)
        assert first_low is not None
        return _Prediction(grid, first_low, out, clicks, tiles)
