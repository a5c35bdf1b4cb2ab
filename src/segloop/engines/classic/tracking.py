"""The classic engine on one propagated slice: the target's mask on slice s, tracked from the
previous slice's mask (a model blending the key slice's with one fitted on the previous
slice, a shape prior, a growth window, clean-up and area limits). ``propagation`` calls it
slice after slice and when it carries a correction.

Must not import the classic engine's propagation or session modules, torch, FastAPI, Celery or
the CLI.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from segloop.engines.classic.context import ClassicContext
from segloop.engines.classic.intensity import IntensityModel
from segloop.engines.classic.morphology import (
    Crop,
    bbox,
    clean,
    component_medians,
    follow,
    inner,
    open_disk,
    signed_distance,
)
from segloop.engines.classic.options import ClassicOptions
from segloop.types import BoolArray

__all__ = ["area_limit", "track"]


def area_limit(opts: ClassicOptions, anchor_area: int, low: int) -> float | None:
    """Largest area (voxels) a propagated slice may take, from the anchor's area and the
    smallest area met so far on the way (``low``).

    The prompted slice shows the target at (about) its largest, so a propagated slice may
    exceed it by ``area_cap`` at most; once the target has tapered below ``taper`` of it,
    growing again means following a neighbour, so the area may not grow beyond
    ``max_growth`` above the smallest one met.
    """
    limit = None if opts.area_cap is None else opts.area_cap * anchor_area + 4
    if opts.taper is not None and low < opts.taper * anchor_area:
        regrow = (1 + opts.max_growth) * low + 4
        limit = regrow if limit is None else min(limit, regrow)
    return limit


def track(ctx: ClassicContext, object_id: int, s: int, prev_z: int, prev: BoolArray,
          model: IntensityModel, limit: float | None = None) -> tuple[BoolArray, IntensityModel]:
    """Segment slice s from the previous slice's mask ``prev``; return it and the model."""
    opts, sp = ctx.opts, ctx.sp
    nx, ny = ctx.shape[:2]
    grow = ctx.grow_mm()
    bb = bbox(prev)
    assert bb is not None
    mx, my = ctx.margin(grow + opts.ring_mm)
    crop = Crop.around(bb, mx, my, nx, ny)
    img = ctx.smoothed(s, crop, object_id)
    pc = prev[crop.sl]
    cap = 4 * grow + 50.0
    sd = signed_distance(pc, sp, cap)
    # local model from the previous slice, blended with the object's model
    vox = max(sp) * 1.01
    ring = (sd < -vox) & (sd > -opts.ring_mm - vox)
    inside = sd > 0
    if inside.sum() >= 8 and ring.sum() >= 8:
        pimg = ctx.smoothed(prev_z, crop, object_id)
        local = IntensityModel(model.lo, model.hi, model.density(pimg[inner(pc)], ctx.noise_level()),
                               model.density(pimg[ring], ctx.noise_level()))
        key = ctx.models[object_id]
        use = key.blend(local, opts.adapt)
    else:
        use = model
    lr = ndi.gaussian_filter(use.log_ratio(img), 0.7)
    window = sd > -grow
    logit = lr + opts.prior_weight * np.clip(sd / grow, -2.0, 1.0)
    # intensity consistency with the accepted target: what lies outside the key slice's
    # intensity range is not the target, whatever the adapted model says
    cand = (logit > 0) & window & ctx.in_support(object_id, img) & ~ctx.padding(s, crop, object_id)
    open_mm = opts.open_frac * ctx.scale.get(object_id, 0.0)
    cand = clean(cand, sp, opts.clean_mm, open_mm) & window
    core = sd > min(grow, 0.5 * float(sd.max()))
    if not core.any():
        core = sd > 0
    new_c = follow(cand, core, pc, opts.follow_frac)
    near = sd > -1.01 * max(sp)  # a one-voxel shift of the outline is no leak
    if opts.neck_open and (new_c & ~near).any():
        # growth must be body, not a thin protrusion: what grew more than a voxel beyond
        # the previous slice survives only where an opening of the new mask (radius a
        # fraction of the target's) keeps it, which cuts leaks through a neck
        r_neck = max(opts.neck_open * ctx.scale.get(object_id, 0.0), max(sp))
        # the opening near the growth depends on the mask within 2 r_neck of it only
        gbb = bbox(new_c & ~near)
        assert gbb is not None
        win = Crop.around(gbb, *ctx.margin(2 * r_neck), *new_c.shape)
        opened = np.zeros_like(new_c)
        opened[win.sl] = open_disk(new_c[win.sl], sp, r_neck)
        new_c = (new_c & near) | (new_c & ~near & opened)
        new_c = follow(new_c, core, pc, opts.follow_frac)
    area_prev = int(pc.sum())
    if opts.max_growth > 0 and new_c.sum() > (1 + opts.max_growth) * area_prev + 4:
        # faster growth than a smooth surface allows: keep only one voxel beyond prev
        new_c &= sd > -1.01 * max(sp)
        new_c = follow(new_c, core, pc, opts.follow_frac)
    if limit is not None and new_c.sum() > limit:
        # larger than the target can be here: keep its most confident part
        vals = np.sort(logit[new_c])[::-1]
        new_c &= logit >= vals[max(0, int(limit) - 1)]
        new_c = follow(new_c, core, pc, opts.follow_frac)
    if opts.min_key_lr is not None and new_c.any():
        # every part must look more like the prompted target than like its surroundings
        # (the model of the prompted slice, not the adapted one): stops at the target's end
        key_lr = ctx.models[object_id].log_ratio(img)
        lab, n = ndi.label(new_c, structure=np.ones((3, 3), bool))
        mean = ndi.mean(key_lr, lab, index=np.arange(1, n + 1))
        ok = np.asarray(mean) > opts.min_key_lr
        typical = ctx.typical.get(object_id)
        if typical is not None:
            # ... and its median intensity must be a typical one of the target's key slice
            med = component_medians(img, lab)
            ok &= (med >= typical[0]) & (med <= typical[1])
        new_c = np.concatenate([[False], ok])[lab]
    if new_c.sum() < max(3, opts.stop_ratio * area_prev):
        new_c = np.zeros_like(new_c)
    out = np.zeros((nx, ny), dtype=bool)
    out[crop.sl] = new_c
    return out, model
