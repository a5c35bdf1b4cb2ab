"""A :class:`~segloop.engines.base.Session` over one 2D image, so the jobs API serves pictures
with any engine through the same tasks as volumes.

The session's grid is the image's canonical one-slice grid ``(X = width, Y = height, 1)``:
``x`` = column, ``y`` = row from the top-left, slice 0 only. Each step segments the picture
itself with :func:`segloop.engines.image2d.segment_image` (RGB reaches the models as RGB;
``classic`` gets its colour feature), so a 2D job gives the same mask as
``segloop segment IMG`` with the same prompts and engine.

- ``segment_slice(0, prompts)`` replaces the object's prompts and mask.
- ``refine(0, prompts)`` adds the new prompts to the object's (a box replaces the box) and
  segments again; after an edit (``set_mask``) or without earlier prompts, the current
  mask's bounding box is the box the new points add to.
- ``propagate`` has nothing to propagate: it yields slice 0 as it is (done = total = 1).

Engines that can keep an image's encoding (``encode_image`` / ``decode_image``, e.g.
``medsam``) encode once per session: a second box or a correction only decodes.
Must not import torch, FastAPI, Celery or the CLI.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from segloop.engines.base import Engine
from segloop.engines.image2d import segment_image, validate_prompts_2d
from segloop.errors import PromptError
from segloop.io.image2d import Image2D
from segloop.types import BoolArray, Prompts, SliceResult

__all__ = ["EncodingSegmenter", "Image2DSession", "merge_prompts"]


@runtime_checkable
class EncodingSegmenter(Protocol):
    """An engine that encodes a picture once and decodes prompts against the encoding."""

    def encode_image(self, pixels: Any) -> Any:
        """The encoding of ``(H, W)`` / ``(H, W, 3)`` pixels (opaque to the caller)."""
        ...

    def decode_image(self, encoding: Any, prompts: Prompts) -> BoolArray:
        """The ``(H, W)`` mask of ``prompts`` (x = column, y = row) on an encoded picture."""
        ...


@dataclass
class _Object:
    prompts: Prompts | None
    mask: BoolArray  # (H, W)


def _box_of(mask: BoolArray) -> tuple[int, int, int, int] | None:
    rows, cols = np.nonzero(mask)
    if rows.size == 0 or rows.min() == rows.max() or cols.min() == cols.max():
        return None
    return int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())


def merge_prompts(old: Prompts | None, new: Prompts, mask: BoolArray | None) -> Prompts:
    """``new`` added to ``old`` (a new box replaces the old one); without ``old``, the box of
    ``mask`` (``(H, W)``) stands for it."""
    box = new.box if new.box is not None else (
        old.box if old is not None else (_box_of(mask) if mask is not None else None))
    pts = [*(old.points.tolist() if old is not None else []), *new.points.tolist()]
    labs = [*(old.labels.tolist() if old is not None else []), *new.labels.tolist()]
    return Prompts.make(box, pts or None, labs or None)


class Image2DSession:
    """One 2D image's interactive state for an engine (see the module docstring)."""

    def __init__(self, engine: Engine, image: Image2D) -> None:
        self.engine, self.image = engine, image
        self._objects: dict[int, _Object] = {}
        self._encoding: Any = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(width, height, 1)``."""
        return self.image.width, self.image.height, 1

    def _check_z(self, z: int) -> None:
        if z != 0:
            raise PromptError(f"slice index {z}: a 2D image has one slice, 0")

    def _segment(self, prompts: Prompts) -> BoolArray:
        validate_prompts_2d(prompts, self.image.height, self.image.width)
        if isinstance(self.engine, EncodingSegmenter):
            if self._encoding is None:
                self._encoding = self.engine.encode_image(self.image.pixels)
            mask: BoolArray = self.engine.decode_image(self._encoding, prompts)
            return np.asarray(mask, dtype=bool)
        return segment_image(self.engine, self.image, prompts)

    def segment_slice(self, z: int, prompts: Prompts, object_id: int = 1) -> BoolArray:
        """Segment the picture from ``prompts``; returns the ``(X, Y)`` mask."""
        self._check_z(z)
        mask = self._segment(prompts)
        self._objects[object_id] = _Object(prompts, mask)
        return np.ascontiguousarray(mask.T)

    def propagate(self, z: int, mask2d: BoolArray | None = None, object_id: int = 1, *,
                  first_slice: int | None = None, last_slice: int | None = None
                  ) -> Iterator[SliceResult]:
        """Nothing to propagate on one slice: yields slice 0 (``mask2d`` replaces it; a
        slice range has nothing to limit)."""
        self._check_z(z)
        if mask2d is not None:
            self._objects[object_id] = _Object(None, np.ascontiguousarray(mask2d.T).astype(bool))
        yield SliceResult(z=0, mask=self.mask(object_id)[:, :, 0], done=1, total=1)

    def refine(self, z: int, prompts: Prompts, object_id: int = 1, *,
               first_slice: int | None = None, last_slice: int | None = None
               ) -> Iterator[SliceResult]:
        """Add ``prompts`` to the object's and segment again (see the module docstring)."""
        self._check_z(z)
        obj = self._objects.get(object_id)
        merged = merge_prompts(obj.prompts if obj else None, prompts,
                               obj.mask if obj is not None and obj.prompts is None else None)
        mask = self._segment(merged)
        self._objects[object_id] = _Object(merged, mask)
        yield SliceResult(z=0, mask=np.ascontiguousarray(mask.T), done=1, total=1)

    def mask(self, object_id: int = 1) -> BoolArray:
        """The object's ``(X, Y, 1)`` mask."""
        obj = self._objects.get(object_id)
        if obj is None:
            return np.zeros(self.shape, dtype=bool)
        return np.ascontiguousarray(obj.mask.T[:, :, None])

    def set_mask(self, mask3d: BoolArray, object_id: int = 1) -> None:
        """Replace the object's mask (an edit): later corrections start from its box."""
        m = np.asarray(mask3d, dtype=bool)
        if m.shape != self.shape:
            raise PromptError(f"mask shape {m.shape} does not fit the image {self.shape}")
        self._objects[object_id] = _Object(None, np.ascontiguousarray(m[:, :, 0].T))

    def objects(self) -> list[int]:
        """Ids of the objects with a mask."""
        return sorted(self._objects)
