"""What a positive click added on its slice, carried to the neighbouring slices
(option ``carry_add``).

A positive click in a missed region adds that region on its slice. Re-tracking the
neighbouring slices with the object's intensity model does not take the region's
continuation when the model calls its tissue background (the fatty medial part of a back
muscle, the stomach's wall below its last tracked slice): the correction stays on one slice.
Here the added region carries its own evidence instead: a local model of the added voxels
against the tissue around them on the clicked slice (:func:`addition_model`), and on each
further slice the voxels that this model calls added tissue, inside the previous slice's
addition and at most ``carry_add`` times as many (:func:`carry_addition`). The footprint
never grows or moves, so the addition follows the region through z, shrinks or stops where it
ends, and never floods (a 3D region grow from the click did, see ``benchmarks/devset.md``).

Masks are ``(X, Y)`` bool slices of the canonical ``(X, Y, Z)`` grid. Must not import the
classic engine's propagation or session modules, torch, FastAPI, Celery or the CLI.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from segloop.engines.classic.context import ClassicContext
from segloop.engines.classic.intensity import IntensityModel
from segloop.engines.classic.morphology import Crop, bbox
from segloop.types import BoolArray

__all__ = ["addition_model", "carry_addition", "carry_model"]


def carry_model(ctx: ClassicContext, object_id: int, z: int, before: BoolArray,
                after: BoolArray) -> IntensityModel | None:
    """The model to carry a click's change of slice z (``before`` -> ``after``) with, or None.

    None unless ``carry_add`` is set and the change only added voxels, and unless slice z
    held the object before the click (a part missed beside what was found: the slices where
    the object had ended pick up tracking from an addition in ``propagate_delta``)."""
    opts = ctx.opts
    added = after & ~before
    if opts.carry_add is None or not added.any() or (before & ~after).any():
        return None
    if not before.any():
        return None
    return addition_model(ctx, object_id, z, added, after)


def addition_model(ctx: ClassicContext, object_id: int, z: int, added: BoolArray,
                   mask: BoolArray) -> IntensityModel | None:
    """The model of what a positive click added on slice z (``added``, eroded by one voxel)
    against the tissue within ``ring_mm`` of it that is neither added nor in the slice's
    ``mask`` (all denoised as the object is); None when either side has fewer than 8 voxels
    (an addition thinner than 3 voxels is mostly the click's seed disk, no evidence)."""
    bb = bbox(added)
    if bb is None:
        return None
    crop = Crop.around(bb, *ctx.margin(ctx.opts.ring_mm), *added.shape)
    a, m = added[crop.sl], mask[crop.sl]
    ring = ctx.near(a, ctx.opts.ring_mm) & ~a & ~m
    fg = ndi.binary_erosion(a)
    if fg.sum() < 8 or ring.sum() < 8:
        return None
    img = ctx.smoothed(z, crop, object_id)
    return ctx.new_model(img[fg], img[ring])


def carry_addition(ctx: ClassicContext, object_id: int, s: int, mask: BoolArray,
                   prev_added: BoolArray, model: IntensityModel, growth: float) -> BoolArray:
    """The voxels of slice s to add: those outside ``mask`` and inside the previous slice's
    addition ``prev_added`` that ``model`` (see :func:`addition_model`) calls added tissue
    (log-ratio > 0, smoothed by 0.7 voxel), at most ``growth`` times as many as
    ``prev_added`` (the most confident ones)."""
    out = np.zeros(mask.shape, dtype=bool)
    bb = bbox(prev_added)
    if bb is None:
        return out
    crop = Crop.around(bb, 3, 3, *mask.shape)
    p, m = prev_added[crop.sl], mask[crop.sl]
    lr = ndi.gaussian_filter(model.log_ratio(ctx.smoothed(s, crop, object_id)), 0.7)
    cand = (lr > 0) & p & ~m
    n = max(1, int(growth * p.sum()))
    if cand.sum() > n:
        vals = np.sort(lr[cand])[::-1]
        cand &= lr >= vals[n - 1]
    out[crop.sl] = cand
    return out
