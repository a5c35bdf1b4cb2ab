"""Model inputs and image embeddings of one session: lazy frames, a byte-bounded cache, and
batched encoding ahead of tracking (imports torch).

The image encoder does not depend on the memory bank, so a propagation encodes the slices it
is about to track in batches (:func:`encode_ahead`) and the per-slice step only runs memory
attention, the decoder and the memory encoder. Features encoded ahead are held until their
slice is tracked, then move into the session's LRU cache, which is bounded by bytes and by
count. The position encodings are the same for every slice (they depend on the shape only),
so the cache keeps views of the runtime's memoised tensors, never a copy: at 512 px they are
five times the size of a slice's own features.
With the runtime's device scheduler every encoder call (a 2D prompt's slice too) goes through
it and shares batches with other sessions (:mod:`segloop.engines.scheduler`).

Frames: on a CPU a slice is resized with PIL's bicubic filter (MedSAM2's exact rule); on an
accelerator the resize and normalisation run in torch on the device, from uint8 slices
copied per batch or (``resident``, the runtime's ``sync_free``) from the whole uint8 volume
uploaded once (two separable bicubic
passes rounded to uint8 as PIL does; within one grey level of PIL when upsampling).
Must not import FastAPI, Celery or the CLI.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from segloop.engines.sam2.preprocess import IMAGENET_MEAN, IMAGENET_STD, slice_to_model_input
from segloop.engines.sam2.runtime import Runtime
from segloop.engines.scheduler import Priority, current_client

__all__ = ["LazyFrames", "encode_ahead", "make_feature_cache", "resize_on_device"]


def resize_on_device(u8: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 slices ``(B, H, W)`` (any device) -> normalised model inputs ``(B, 3, S, S)`` float32.

    Bicubic (a = -0.5, PIL's kernel) width then height, each pass rounded and clipped to
    0..255 as PIL's uint8 resize does."""
    x = u8.to(torch.float32)[:, None]
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if w != size:
        x = F.interpolate(x, size=(h, size), mode="bicubic", antialias=True, align_corners=False)
        x = x.round().clamp(0, 255)
    if h != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True,
                          align_corners=False)
        x = x.round().clamp(0, 255)
    mean = torch.as_tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.as_tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return ((x / 255.0 - mean) / std).contiguous()


def _take(slices: torch.Tensor, zs: list[int]) -> torch.Tensor:
    """``slices[zs]`` without a host->device index copy when ``zs`` is a run (step +-1)."""
    lo, hi = min(zs), max(zs)
    if zs == list(range(lo, hi + 1)):
        return slices[lo:hi + 1]
    if zs == list(range(hi, lo - 1, -1)):
        return slices[lo:hi + 1].flip(0)
    return slices[torch.as_tensor(zs, dtype=torch.long).to(slices.device)]


class LazyFrames(dict):  # type: ignore[type-arg]
    """Model inputs ``(3, S, S)`` float32 made from uint8 slices on first access (not kept).

    Stands in for ``Sam2VideoInferenceSession.processed_frames`` (a dict frame -> tensor):
    ``len`` is the number of slices; a missing frame is computed by ``__missing__``.
    """

    def __init__(self, u8: npt.NDArray[np.uint8], size: int, device: torch.device,
                 resident: bool = False) -> None:
        super().__init__()
        self._u8 = u8
        self._size = size
        self._device = device
        self._resident = resident and device.type != "cpu"
        self._on_device: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self._u8.shape[0])

    def __missing__(self, z: int) -> torch.Tensor:
        return self.batch([z])[0]

    def batch(self, zs: Sequence[int]) -> torch.Tensor:
        """Slices ``zs`` as one ``(B, 3, S, S)`` batch on the session's device."""
        if self._device.type == "cpu":
            return torch.from_numpy(np.stack([slice_to_model_input(self._u8[z], self._size)
                                              for z in zs]))
        if self._resident:  # the whole uint8 volume uploaded once (1 byte per voxel)
            if self._on_device is None:
                self._on_device = torch.from_numpy(self._u8).to(self._device)
            return resize_on_device(_take(self._on_device, list(zs)), self._size)
        u8 = torch.from_numpy(np.ascontiguousarray(self._u8[list(zs)]))
        return resize_on_device(u8.to(self._device, non_blocking=True), self._size)


def _nbytes(tensors: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def make_feature_cache(capacity: int, max_bytes: int, device: torch.device) -> Any:
    """An LRU image-embedding cache compatible with ``Sam2VideoInferenceCache``.

    ``hits``: slices served from the LRU; ``misses``: slices encoded (ahead or on demand).
    ``pinned`` frames (a propagation's conditioning slices) are never evicted.
    """
    from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceCache

    class _FeatureCache(Sam2VideoInferenceCache):
        def __init__(self) -> None:
            super().__init__(inference_device=device, inference_state_device=device,
                             max_vision_features_cache_size=capacity)
            self.max_bytes = max_bytes
            self.bytes = 0
            self._lru: OrderedDict[int, list[torch.Tensor]] = OrderedDict()
            self._ahead: dict[int, list[torch.Tensor]] = {}
            self._pos: list[torch.Tensor] | None = None
            self.hits = 0
            self.misses = 0
            self.pinned: set[int] = set()

        def __contains__(self, frame_idx: object) -> bool:
            return frame_idx in self._lru or frame_idx in self._ahead

        def _insert(self, frame_idx: int, feats: list[torch.Tensor]) -> None:
            old = self._lru.pop(frame_idx, None)
            if old is not None:
                self.bytes -= _nbytes(old)
            self._lru[frame_idx] = feats
            self.bytes += _nbytes(feats)
            while (len(self._lru) > self.max_vision_features_cache_size
                   or self.bytes > self.max_bytes):
                victim = next((k for k in self._lru if k not in self.pinned and k != frame_idx),
                              None)
                if victim is None:
                    break
                self.bytes -= _nbytes(self._lru.pop(victim))

        def put_ahead(self, frame_idx: int, feats: list[torch.Tensor],
                      pos: list[torch.Tensor]) -> None:
            """Features encoded ahead of tracking; held (unbounded) until the slice is used."""
            if self._pos is None:
                self._pos = pos
            self._ahead[frame_idx] = feats
            self.misses += 1

        def drop_ahead(self) -> None:
            """Forget features encoded ahead and never used (a cancelled propagation)."""
            self._ahead.clear()

        def cache_vision_features(self, frame_idx: int, features: dict[str, Any]) -> None:
            feats = [t.clone(memory_format=torch.contiguous_format)
                     for t in features["vision_feats"]]
            if self._pos is None:  # views of the memo's tensors (runtime): not a second copy
                self._pos = list(features["vision_pos_embeds"])
            self._insert(frame_idx, feats)

        def get_vision_features(self, frame_idx: int) -> dict[str, Any] | None:
            feats = self._ahead.pop(frame_idx, None)
            if feats is not None:
                self._insert(frame_idx, feats)
            else:
                feats = self._lru.get(frame_idx)
                if feats is None:
                    self.misses += 1
                    return None
                self.hits += 1
                self._lru.move_to_end(frame_idx)
            return {"vision_feats": list(feats), "vision_pos_embeds": list(self._pos or [])}

        def clear_all(self) -> None:
            self._lru.clear()
            self._ahead.clear()
            self.bytes = 0

    return _FeatureCache()


def encode_ahead(rt: Runtime, frames: LazyFrames, cache: Any, zs: Sequence[int],
                 client: str = "", priority: Priority = Priority.AHEAD) -> None:
    """Encode slices ``zs`` and hold their features in ``cache``: in one image-encoder call of
    their own, or, with the runtime's device scheduler, in the shared batches of all sessions
    (on behalf of ``client``: the user of :func:`~segloop.engines.scheduler.client_scope` when
    one is set)."""
    if not zs:
        return
    rows = list(frames.batch(zs).unbind(0))
    if rt.scheduler is not None:
        out = rt.scheduler.submit(rows, priority, current_client() or client)
    else:
        out = rt.encode_parts([rows])
    for z, f in zip(zs, out, strict=True):
        cache.put_ahead(z, f.feats, f.pos)
