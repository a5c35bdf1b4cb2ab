"""The classic engine's tracking, refitted on the slice it segments (``ClassicOptions.refit``).

``tracking.track`` labels a slice by a model blending the key slice's with one fitted on
the PREVIOUS slice's mask and ring. Where the target's intensity drifts along z (an MR bias
field, contrast filling a vessel or an organ unevenly), both lag behind the slice at hand, and
the target's voxels that have drifted furthest are called background. A GrabCut-like pass
refits the local model on the CURRENT slice, from the tracked mask's core against the tissue
around it, and tracks the slice again with it (same window, shape prior and checks).

Must not import the classic engine's session or propagation modules, torch, FastAPI, Celery
or the CLI.
"""

from __future__ import annotations

import numpy as np

from segloop.engines.classic.context import ClassicContext
from segloop.engines.classic.intensity import IntensityModel
from segloop.engines.classic.morphology import Crop, bbox, inner, signed_distance
from segloop.engines.classic.tracking import track
from segloop.types import BoolArray

__all__ = ["current_model", "track_refit"]


def current_model(ctx: ClassicContext, object_id: int, s: int, mask: BoolArray,
                  gap_mm: float) -> IntensityModel | None:
    """The object's intensity model refitted on slice s: the core of ``mask`` (without its
    border voxels) against a ring of ``ring_mm`` beginning ``gap_mm`` outside it.

    The gap keeps out of the background the band just outside the mask, where the target's
    missed voxels lie when the mask fell short of it (GrabCut's background model would learn
    them as background and confirm the miss). None when either side has under 8 voxels.
    """
    bb = bbox(mask)
    key = ctx.models.get(object_id)
    if bb is None or key is None:
        return None
    vox = max(ctx.sp) * 1.01
    ring_mm = ctx.opts.ring_mm
    crop = Crop.around(bb, *ctx.margin(gap_mm + ring_mm + vox), *mask.shape)
    mc = mask[crop.sl]
    sd = signed_distance(mc, ctx.sp, gap_mm + ring_mm + 2 * vox)
    ring = (sd < -gap_mm - vox) & (sd > -gap_mm - ring_mm - vox)
    fg = inner(mc)
    if fg.sum() < 8 or ring.sum() < 8:
        return None
    img = ctx.smoothed(s, crop, object_id)
    noise = ctx.noise_level()
    return IntensityModel(key.lo, key.hi, key.density(img[fg], noise), key.density(img[ring], noise))


def track_refit(ctx: ClassicContext, object_id: int, s: int, prev_z: int,
                prev: BoolArray, model: IntensityModel,
                limit: float | None = None) -> tuple[BoolArray, IntensityModel]:
    """``track`` slice s, then (``refit`` times, until nothing changes) track it again with the
    local model refitted on slice s from the last result (``current_model``, the ring
    ``refit_gap`` times the growth distance outside it). Without ``refit``: ``track``."""
    out, model_out = track(ctx, object_id, s, prev_z, prev, model, limit)
    n = ctx.opts.refit
    if n is None:
        return out, model_out
    for _ in range(int(n)):
        local = current_model(ctx, object_id, s, out, ctx.opts.refit_gap * ctx.grow_mm())
        if local is None:
            break
        new, _ = track(ctx, object_id, s, prev_z, prev, model, limit, local)
        if not new.any() or np.array_equal(new, out):
            break
        out = new
    return out, model_out
