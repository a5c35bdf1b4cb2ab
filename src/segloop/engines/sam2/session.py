"""SAM 2-family sessions on one volume, driving ``transformers``' Sam2VideoModel (imports torch).

The volume is scaled once to uint8 slices (:mod:`.preprocess`); model inputs are made per slice
on demand and never all kept (:mod:`.features`). Image embeddings are kept in a per-session
LRU cache bounded by bytes, so a new prompt on an encoded slice only runs the prompt encoder
and mask decoder; a propagation encodes the slices it will track in batches ahead of tracking
(``encode_batch``). Every 2D prediction
and every propagation builds a fresh ``Sam2VideoInferenceSession`` (memory bank) that shares
those lazily computed frames and the embedding cache, so objects and passes never mix their
memories. Propagation follows MedSAM2: the conditioning slice(s) first, then forward to the
next anchor, then a reset and the same backward, the union of both, then the largest 3D
connected component (never removing anchored slices); optional SAM 2 hole filling on the
low-resolution logits of every prediction (``fill_holes``, MedSAM2's ``fill_hole_area``). As in
SAM 2's video predictor, a conditioning slice's memory is encoded from its stored (hole-filled)
low-resolution logits upsampled to the model size, not from transformers' full-size masks.

Axis conventions: segloop slices are canonical ``(X, Y)`` arrays; the model sees ``(H=Y, W=X)``
images in the radiological view (:mod:`segloop.io.radiological`: anterior up, the patient's
right on the left), so a canonical point ``(x, y)`` is the view pixel ``(X-1-x, Y-1-y)`` and
maps to model pixels as ``col * S / X`` and ``row * S / Y``.
Must not import FastAPI, Celery or the CLI.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from segloop.engines.sam2.components import cut_to_largest_component
from segloop.engines.sam2.features import LazyFrames, encode_ahead, make_feature_cache
from segloop.engines.sam2.heap import warm_heap
from segloop.engines.sam2.postprocess import (
    HostMasks,
    fill_holes_torch,
    largest_component_torch,
    masks_to_host,
    masks_to_host_async,
)
from segloop.engines.sam2.preprocess import (
    fill_holes_in_scores,
    prompt_points,
    to_uint8_volume,
)
from segloop.engines.sam2.runtime import OFFLOAD_ABOVE, Runtime
from segloop.engines.scheduler import Priority
from segloop.engines.state import SessionState
from segloop.errors import EngineError, PromptError
from segloop.io.radiological import box_to_view, points_to_view, slice_to_view, view_to_slice
from segloop.io.volume import Volume
from segloop.types import BoolArray, Prompts, SliceResult, validate_prompts, validate_slice

__all__ = ["Runtime", "Sam2Session"]

log = logging.getLogger(__name__)

class Sam2Session:
    """One volume's interactive SAM 2 state; implements :class:`segloop.engines.base.Session`.

    The CT window is ``volume.meta["window"]`` when set (a preset, ``"L,W"`` or bounds), else
    the engine's ``window`` option.

    Masks are ``(X, Y)`` / ``(X, Y, Z)`` bool on the volume's canonical grid.
    """

    def __init__(self, runtime: Runtime, volume: Volume) -> None:
        self._rt = runtime
        canon = volume.canonical()
        data = np.asarray(canon.data)
        self._shape: tuple[int, int, int] = (int(data.shape[0]), int(data.shape[1]),
                                             int(data.shape[2]))
        # a per-case window (``volume.meta["window"]``, e.g. from `segment --window`) wins
        window = canon.meta.get("window") or volume.meta.get("window") or runtime.window
        self._u8 = to_uint8_volume(data, canon.modality, window)  # (Z, H=Y, W=X)
        self._frames = LazyFrames(self._u8, runtime.image_size, runtime.device,
                                  resident=runtime.sync_free)
        self._cache = make_feature_cache(runtime.cache_frames, int(runtime.cache_mb * 2**20),
                                         runtime.device)
        self._state = SessionState(self._shape)
        #: this session's turn at the device scheduler when no user scope is set
        self._client = f"session-{id(self):x}"

    # ------------------------------------------------------------------ protocol

    @property
    def shape(self) -> tuple[int, int, int]:
        """Canonical volume shape ``(X, Y, Z)``."""
        return self._shape

    @property
    def cache_stats(self) -> tuple[int, int]:
        """(hits, misses) of the image-embedding cache."""
        return int(self._cache.hits), int(self._cache.misses)

    def segment_slice(self, z: int, prompts: Prompts, object_id: int = 1) -> BoolArray:
        """The ``(X, Y)`` mask of slice z from a box and/or points; stored and anchored."""
        validate_prompts(z, prompts, self._shape)
        mask = self._predict_2d(z, prompts)
        self._state.set_slice(object_id, z, mask, prompts)
        return mask.copy()

    def propagate(
        self, z: int, mask2d: BoolArray | None = None, object_id: int = 1, *,
        first_slice: int | None = None, last_slice: int | None = None
    ) -> Iterator[SliceResult]:
        """Propagate slice z's mask (or ``mask2d``) forward then backward up to the anchors
        (and no further than ``first_slice`` / ``last_slice``)."""
        validate_slice(z, self._shape)
        st = self._state.bound(object_id, first_slice, last_slice)
        if mask2d is not None:
            m = np.asarray(mask2d, dtype=bool)
            if m.shape != self._shape[:2]:
                raise PromptError(
                    f"mask2d has shape {m.shape} but slices of this volume are {self._shape[:2]}"
                )
            self._state.set_slice(object_id, z, m, None)
            st.prompts.pop(z, None)
        elif z not in st.prompts and not st.mask[:, :, z].any():
            raise EngineError(
                f"slice {z} of object {object_id} has no mask to propagate: segment it first"
            )
        else:
            st.anchors.add(z)
        return self._propagate_from(z, object_id, first=None)

    def refine(self, z: int, prompts: Prompts, object_id: int = 1, *,
               first_slice: int | None = None, last_slice: int | None = None
               ) -> Iterator[SliceResult]:
        """Add prompts on slice z (a box replaces the old one), re-segment, re-propagate (no
        further than ``first_slice`` / ``last_slice``).

        When slice z had no prompts, the correction acts on its current mask: the mask's
        bounding box (unless a new box is given) plus the new points. Yields slice z first,
        then the re-propagated slices.
        """
        validate_prompts(z, prompts, self._shape)
        st = self._state.bound(object_id, first_slice, last_slice)
        old = st.prompts.get(z)
        if old is not None:
            merged = old.merged(prompts)
        else:
            current = st.mask[:, :, z]
            box = prompts.box
            if box is None and current.any():
                xs = np.flatnonzero(current.any(axis=1))
                ys = np.flatnonzero(current.any(axis=0))
                box = (int(xs[0]), int(ys[0]), int(xs[-1]), int(ys[-1]))
                if box[0] == box[2] or box[1] == box[3]:
                    box = None
            merged = Prompts(box=box, points=prompts.points, labels=prompts.labels)
        mask = self._predict_2d(z, merged)
        self._state.set_slice(object_id, z, mask, merged)
        return self._propagate_from(z, object_id, first=mask)

    def mask(self, object_id: int = 1) -> BoolArray:
        """The current ``(X, Y, Z)`` bool mask of one object (all False if never segmented)."""
        st = self._state.objects.get(object_id)
        if st is None:
            return np.zeros(self._shape, dtype=bool)
        return st.mask.copy()

    def set_mask(self, mask3d: BoolArray, object_id: int = 1) -> None:
        """Replace an object's 3D mask (an edit); every non-empty slice becomes an anchor."""
        m = np.asarray(mask3d, dtype=bool)
        if m.shape != self._shape:
            raise PromptError(f"mask has shape {m.shape} but the volume is {self._shape}")
        self._state.set_mask(object_id, m)

    def objects(self) -> list[int]:
        """Ids of the objects with a state in this session."""
        return sorted(self._state.objects)

    # ------------------------------------------------------------------ model plumbing

    def _new_video_session(self) -> Any:
        from transformers import Sam2VideoInferenceSession

        dev = self._rt.device
        # long volumes on a GPU: keep the memory bank in host memory (frames always are),
        # unless sync_free: the bank is trimmed to the memory window while tracking (_track),
        # so it stays small, and offloading it costs a blocking copy per slice
        state_dev = (torch.device("cpu") if dev.type != "cpu" and self._shape[2] > OFFLOAD_ABOVE
                     and not self._rt.sync_free else dev)
        vs = Sam2VideoInferenceSession(
            video=None, video_height=self._shape[1], video_width=self._shape[0],
            inference_device=dev, inference_state_device=state_dev, video_storage_device="cpu",
            dtype=torch.float32,
        )
        vs.processed_frames = self._frames
        vs.cache = self._cache
        return vs

    def _point_inputs(self, prompts: Prompts) -> dict[str, torch.Tensor]:
        """Box corners (labels 2, 3) then points, in model pixels of the radiological view,
        shaped (1, 1, N, 2)."""
        s = float(self._rt.image_size)
        xy = (self._shape[0], self._shape[1])
        box = None if prompts.box is None else box_to_view(prompts.box, xy)
        points = points_to_view(prompts.points, xy) if len(prompts.points) else prompts.points
        coords, labels = prompt_points(box, points, prompts.labels,
                                       s / self._shape[0], s / self._shape[1])
        return {"point_coords": torch.from_numpy(coords), "point_labels": torch.from_numpy(labels)}

    def _mask_input(self, mask_xy: BoolArray) -> torch.Tensor:
        """A ``(X, Y)`` mask as the model's ``(1, 1, S, S)`` binary mask input (view order)."""
        s = self._rt.image_size
        view = slice_to_view(np.asarray(mask_xy, dtype=np.float32))
        m = torch.from_numpy(view)[None, None]
        m = F.interpolate(m, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return (m >= 0.5).float()

    def _add_inputs(self, vs: Any, z: int, prompts: Prompts | None, mask_xy: BoolArray | None
                    ) -> None:
        obj_idx = vs.obj_id_to_idx(1)
        if prompts is not None:
            vs.add_point_inputs(obj_idx, z, self._point_inputs(prompts))
            vs.remove_mask_inputs(obj_idx, z)
        else:
            assert mask_xy is not None
            vs.add_mask_inputs(obj_idx, z, self._mask_input(mask_xy))
            vs.remove_point_inputs(obj_idx, z)
        vs.obj_with_new_inputs = [1]

    def _to_slice_mask(self, logits: torch.Tensor) -> BoolArray:
        """Low-res view logits ``(1, 1, h, w)`` -> ``(X, Y)`` bool: bilinear to the slice, > 0."""
        if self._rt.device_post:
            return np.asarray(masks_to_host(logits[:, 0], self._shape[:2],
                                            self._rt.fill_holes)[0].numpy())
        x, y = self._shape[0], self._shape[1]
        logits = logits.float()
        if self._rt.fill_holes > 0:
            low = fill_holes_in_scores(logits[0, 0].cpu().numpy(), self._rt.fill_holes)
            logits = torch.from_numpy(low)[None, None].to(logits.device)
        up = F.interpolate(logits, size=(y, x), mode="bilinear", align_corners=False)
        return view_to_slice((up[0, 0] > 0).cpu().numpy())

    def _run_logits(self, vs: Any, z: int, reverse: bool = False, memory: bool = True,
                    tracked: bool = False) -> torch.Tensor:
        """Run the model on slice z; its low-resolution view logits ``(1, 1, h, w)``.

        ``tracked``: a slice tracked by a propagation, where the runtime's ``sync_free`` and
        ``compile`` switches apply (:mod:`.faststep`)."""
        rt = self._rt
        # a 2D prediction (no memory) is what a user waits for: it goes before tracking steps
        prio = Priority.AHEAD if memory else Priority.INTERACTIVE
        with rt.hold(prio), torch.inference_mode(), rt.autocast(), \
                rt.fast.tracking(tracked and rt.sync_free, tracked and rt.compile):
            out = rt.model(vs, frame_idx=z, reverse=reverse, run_mem_encoder=memory)
            logits: torch.Tensor = out.pred_masks[:1].float().clone()
        return logits

    def _run(self, vs: Any, z: int, reverse: bool = False, memory: bool = True) -> BoolArray:
        return self._to_slice_mask(self._run_logits(vs, z, reverse, memory))

    def _conditioning_memory_input(self, low_res: torch.Tensor) -> torch.Tensor:
        """The ``(1, 1, S, S)`` mask logits a conditioning slice's memory is encoded from.

        SAM 2's video predictor (and MedSAM2's) encodes the memory of a prompted slice from
        its *stored* low-resolution logits, upsampled bilinearly to the model size: after the
        hole filling (``fill_holes``), and for a mask input the downsampled mask rather than
        the full-size one. ``transformers`` encodes from its full-size masks instead, which
        differs exactly in those two cases.
        """
        low = low_res.float()
        if self._rt.fill_holes > 0 and self._rt.device_post:
            low = fill_holes_torch(low[:, 0], self._rt.fill_holes)[:, None]
        elif self._rt.fill_holes > 0:
            filled = fill_holes_in_scores(low[0, 0].cpu().numpy(), self._rt.fill_holes)
            low = torch.from_numpy(filled)[None, None].to(low.device)
        s = self._rt.image_size
        return F.interpolate(low, size=(s, s), mode="bilinear", align_corners=False)

    def _run_conditioning(self, vs: Any, z: int) -> None:
        """Run a conditioning slice (inputs already added) and encode its memory as SAM 2 does."""
        model = self._rt.model
        with self._rt.hold(Priority.AHEAD), torch.inference_mode(), self._rt.autocast():
            out = model(vs, frame_idx=z, run_mem_encoder=False)
            score = vs.get_output(0, z, "object_score_logits", is_conditioning_frame=True)
            model._batch_encode_memories(
                inference_session=vs, frame_idx=z, objects_needing_memory_encoding=[0],
                high_res_masks_for_memory=[self._conditioning_memory_input(out.pred_masks[:1])],
                object_score_logits_for_memory=[score], is_mask_from_pts_per_obj=[True],
            )

    def _encode(self, zs: list[int], priority: Priority) -> None:
        """With the device scheduler: encode the slices of ``zs`` not in the cache through it
        (without, the model encodes a missing slice itself when it runs it)."""
        if self._rt.scheduler is None:
            return
        todo = [z for z in zs if z not in self._cache]
        encode_ahead(self._rt, self._frames, self._cache, todo, self._client, priority)

    def _predict_2d(self, z: int, prompts: Prompts) -> BoolArray:
        self._encode([z], Priority.INTERACTIVE)
        vs = self._new_video_session()
        self._add_inputs(vs, z, prompts, None)
        return self._run(vs, z, memory=False)

    def _conditioning(self, z: int, object_id: int) -> list[int]:
        """Slices that condition a propagation from z: z and its nearest anchors each side."""
        st = self._state.get(object_id)
        below = [a for a in st.anchors if a < z]
        above = [a for a in st.anchors if a > z]
        cond = [z]
        if below:
            cond.append(max(below))
        if above:
            cond.append(min(above))
        return cond

    def _track(self, z: int, object_id: int, direction: int, span: range
               ) -> Iterator[tuple[int, BoolArray]]:
        st = self._state.get(object_id)
        vs = self._new_video_session()
        conditioned = 0
        self._encode([a for a in self._conditioning(z, object_id)
                      if a in st.prompts or st.mask[:, :, a].any()], Priority.AHEAD)
        for a in self._conditioning(z, object_id):
            prompts = st.prompts.get(a)
            if prompts is None and not st.mask[:, :, a].any():
                continue
            self._add_inputs(vs, a, prompts, None if prompts is not None else st.mask[:, :, a])
            self._run_conditioning(vs, a)
            conditioned += 1
        if not conditioned:  # an empty mask propagates as empty slices
            for t in span:
                yield t, np.zeros(self._shape[:2], dtype=bool)
            return
        keep = max(int(self._rt.model.config.num_maskmem),
                   int(self._rt.model.config.max_object_pointers_in_encoder))
        outputs = vs.output_dict_per_obj[0]["non_cond_frame_outputs"]
        order = list(span)
        # device post-processing: logits stay on the device and come back in chunks, so
        # tracking never waits for a per-slice copy
        chunk = max(1, self._rt.copy_chunk) if self._rt.device_post else 1
        pending: list[tuple[int, torch.Tensor]] = []
        # sync_free: a chunk's copy is waited for only once the next chunk is queued, so the
        # device never runs dry while the host reads masks
        inflight: list[tuple[list[int], HostMasks]] = []
        for i, t in enumerate(order):
            if (self._rt.encode_batch > 1 or self._rt.scheduler is not None) and t not in self._cache:
                ahead = [u for u in order[i:] if u not in self._cache][:self._rt.encode_batch]
                encode_ahead(self._rt, self._frames, self._cache, ahead, self._client)
            logits = self._run_logits(vs, t, reverse=direction < 0, tracked=True)
            # bounded memory on long volumes: the full-size mask is only needed to encode the
            # memory (done), and frames further back than the memory/pointer window are unused
            out_t = outputs.get(t)
            if out_t is not None:
                out_t.pop("high_res_masks", None)
            outputs.pop(t - direction * keep, None)
            if not self._rt.device_post:
                yield t, self._to_slice_mask(logits)
                continue
            pending.append((t, logits[0, 0]))
            if len(pending) < chunk and i < len(order) - 1:
                continue
            stacked = torch.stack([p for _, p in pending])
            zs = [u for u, _ in pending]
            pending = []
            if self._rt.sync_free:
                inflight.append((zs, masks_to_host_async(stacked, self._shape[:2],
                                                         self._rt.fill_holes)))
                ready = inflight[:-1] if i < len(order) - 1 else inflight
                inflight = inflight[len(ready):]
                for us, copy in ready:
                    yield from zip(us, copy.wait(), strict=True)
                continue
            host = masks_to_host(stacked, self._shape[:2], self._rt.fill_holes).numpy()
            yield from zip(zs, host, strict=True)

    def _propagate_from(self, z: int, object_id: int, first: BoolArray | None
                        ) -> Iterator[SliceResult]:
        """Track forward then backward from z; yield each slice as soon as it is tracked.

        With ``largest_component`` on (MedSAM2's behaviour) the 3D component filter needs every
        slice: once tracking is done, the slices it changed are yielded again with their
        filtered masks (``done == total``), so the last result of a slice is the stored mask
        and progress stays live. The corrected slice of a refinement (``first``) comes first.
        """
        st = self._state.get(object_id)
        fwd, bwd = st.span(z, +1), st.span(z, -1)
        total = len(fwd) + len(bwd) + (1 if first is not None else 0)

        def gen() -> Iterator[SliceResult]:
            # opt-in on a CPU: each slice's activations reuse the previous slice's pages (.heap)
            with warm_heap(self._rt.warm_heap and self._rt.device.type == "cpu"):
                self._cache.pinned = set(self._conditioning(z, object_id))
                try:
                    yield from run()
                finally:
                    self._cache.pinned = set()
                    self._cache.drop_ahead()

        def run() -> Iterator[SliceResult]:
            done = 0
            if first is not None:
                done += 1
                yield SliceResult(z=z, mask=first.copy(), done=done, total=total)
            touched: list[int] = []
            for direction, span in ((+1, fwd), (-1, bwd)):
                if not len(span):
                    continue
                for t, m in self._track(z, object_id, direction, span):
                    st.mask[:, :, t] = m
                    touched.append(t)
                    done += 1
                    yield SliceResult(z=t, mask=m.copy(), done=done, total=total)
            if self._rt.largest_component:
                cut = list(touched)
                if self._rt.filter_key_slice and first is None and z in st.prompts:
                    cut.append(z)  # MedSAM2 filters its key slice too
                for t in self._keep_largest_component(object_id, cut):
                    yield SliceResult(z=t, mask=st.mask[:, :, t].copy(), done=done, total=total)

        return gen()

    def _keep_largest_component(self, object_id: int, touched: list[int]) -> list[int]:
        """MedSAM2's largest 3D connected component, applied to the tracked slices only.

        Returns the slices it changed. Only the mask's bounding box is labelled (scipy in
        slabs of a few MB on a CPU, :mod:`.components`; torch on the model's device with
        ``device_post``), and no copy of the volume's masks is kept to find the changes."""
        st = self._state.get(object_id)
        if not touched:
            return []
        box = _bounding_box(st.mask)
        if box is None:
            return []
        sub = st.mask[box]
        z0 = box[2].start
        if not self._rt.device_post:  # labelled in slabs: a few MB, not 2-4 bytes per voxel
            return [z0 + k for k in cut_to_largest_component(sub, [t - z0 for t in touched])]
        on_dev = torch.from_numpy(np.ascontiguousarray(sub)).to(self._rt.device)
        keep = largest_component_torch(on_dev).cpu().numpy()
        changed = []
        for t in touched:
            if not box[2].start <= t < box[2].stop:
                continue
            k = t - z0
            kept = keep[:, :, k]
            cut = sub[:, :, k] & ~kept
            if cut.any():
                sub[:, :, k] &= ~cut
                changed.append(t)
        return changed


def _bounding_box(mask: BoolArray) -> tuple[slice, slice, slice] | None:
    """The smallest box holding every True voxel of a 3D mask (None when there is none)."""
    spans = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        if not len(idx):
            return None
        spans.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return spans[0], spans[1], spans[2]
