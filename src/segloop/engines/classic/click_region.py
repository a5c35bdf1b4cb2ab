"""The classic engine's region for a positive click that the object's model calls background.

The simulated user (and a real one) clicks in the middle of a missed region. When the
object's intensity model calls the click's tissue background, the old step flooded by
similarity to the click's few neighbours, within a reach set by the click's distance to the
mask: it often took a fraction of the missed region. Here a *local* model decides instead:
the click's neighbourhood against the tissue around the region's plausible extent (a disk of
``own_region`` times the object's radius around the click, the object's key-slice scale),
refined by refitting the click's side to the region found, and the region is its connected
part that holds the click, outside the current mask. When the click's tissue is also the
surroundings' (their densities overlap), there is no local evidence and the old flood acts.
On a slice where the object was absent, the local region also replaces a region that the
object's model did take when it is far smaller (option ``local_empty``): the model called
the missed part's target-like surroundings target too (a hippocampus click that took 136
voxels for 38 of the target, ``benchmarks/devset.md``, eleventh pass (b)).

Must not import the classic engine's propagation or session modules, torch, FastAPI, Celery or
the CLI.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage as ndi

from segloop.engines.classic.context import ClassicContext
from segloop.engines.classic.morphology import Crop, ball, disk, keep_components
from segloop.types import BoolArray

__all__ = ["local_region", "smaller_local"]


def local_region(ctx: ClassicContext, object_id: int, z: int, x: int, y: int,
                 current: BoolArray, reach_mm: float) -> BoolArray:
    """The region of a positive click at (x, y) on slice z by a local intensity model.

    ``current``: the slice's ``(X, Y)`` bool mask before the click (never part of the region,
    nor of the background). ``reach_mm``: radius (mm, in plane) of the region's plausible
    extent around the click. The model's foreground starts as the click's 2 mm disk, its
    background is the non-mask tissue in a ring of ``ring_mm`` beyond the reach; three rounds
    refit the foreground to the region found and add the reach's rest to the background.
    When the click's tissue and the ring's densities overlap by ``own_overlap`` (Bhattacharyya
    coefficient) or more, the local model has no evidence and the region is empty.
    Returns an ``(X, Y)`` bool mask, empty or holding the click (empty when the click lies in
    ``current``).
    """
    opts, sp = ctx.opts, ctx.sp
    nx, ny = ctx.shape[:2]
    out = np.zeros((nx, ny), dtype=bool)
    if current[x, y]:
        return out
    mx, my = ctx.margin(reach_mm + opts.ring_mm)
    crop = Crop.around((x, y, x, y), mx, my, nx, ny)
    img = ctx.smoothed(z, crop, object_id)
    cur = current[crop.sl]
    px, py = x - crop.x0, y - crop.y0
    seed = disk(img.shape, px, py, max(1.5, 1.1 * min(sp)), sp)
    near = disk(img.shape, px, py, max(2.0, 1.5 * min(sp)), sp) & ~cur
    win = disk(img.shape, px, py, reach_mm, sp) & ~cur
    ring = disk(img.shape, px, py, reach_mm + opts.ring_mm, sp) & ~win & ~cur
    if ring.sum() < 8 or near.sum() < 3:
        out[x, y] = True
        return out
    fg = near
    region = seed
    for i in range(3):
        model = ctx.new_model(img[fg], img[ring])
        if i == 0 and opts.own_overlap is not None and model.overlap(model.bg) >= opts.own_overlap:
            return out  # the click's tissue is the surroundings' too: no local evidence
        lr = ndi.gaussian_filter(model.log_ratio(img), 0.7)
        cand = (lr > 0) & win
        cand = ndi.binary_opening(cand, ball(opts.clean_mm, sp)) | (seed & ~cur)
        region = keep_components(cand & win, seed & ~cur)
        if region.sum() < 8:
            break
        fg = region
    region = np.asarray(ndi.binary_fill_holes(region | (seed & ~cur)), dtype=bool) & ~cur
    out[crop.sl] = region
    return out


def smaller_local(ctx: ClassicContext, current: BoolArray, region: BoolArray, first: bool,
                  local: Callable[[], BoolArray]) -> BoolArray:
    """With ``local_empty``, on a slice where the object was absent (``current`` empty; not
    the object's first click), the click's local region (``local()``, :func:`local_region`'s
    result, asked for only here) when it is under ``local_empty`` times the size of ``region``
    (the object's model's region, any grid); otherwise an empty ``(X, Y)`` mask."""
    if ctx.opts.local_empty is None or first or current.any() or not region.any():
        return np.zeros(current.shape, dtype=bool)
    found = local()
    if found.sum() < ctx.opts.local_empty * region.sum():
        return found
    return np.zeros(current.shape, dtype=bool)
