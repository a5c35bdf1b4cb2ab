"""The classic engine's key slice: where a high-contrast target's boundary lies
(``edge_mid``).

GrabCut thresholds a log-likelihood ratio of two densities. Where the target's intensity is
one its surroundings never show (the CSF of a ventricle in brain tissue), the background's
density is thin over the partial-volume band between the two, and the band's voxels (and a
thin septum of tissue between two dark cavities, blurred by the denoising) fall to the
target. An observer, and every reference outline drawn on such images, puts the boundary of
a high-contrast target where the intensity crosses half-way between the target's and its
surroundings'. So on such a target (its median beyond the ring's ``q`` / ``1 - q``
quantile), the result's voxels past the half-way intensity between its median and the ring's
median are dropped. Targets in tissue of like intensity (grey matter in grey matter) are
left alone: their median lies inside the ring's range.

Must not import the classic engine's propagation or session modules, torch, FastAPI, Celery or
the CLI.
"""

from __future__ import annotations

import numpy as np

from segloop.engines.classic.context import ClassicContext
from segloop.engines.classic.intensity import F32, IntensityModel
from segloop.engines.classic.morphology import largest
from segloop.engines.classic.novel import ring_range
from segloop.types import BoolArray

__all__ = ["halfway_edge"]


def halfway_edge(ctx: ClassicContext, img: F32, fg: BoolArray, model: IntensityModel,
                 inbox: BoolArray, ring: BoolArray,
                 q: float, least: float) -> tuple[BoolArray, IntensityModel]:
    """The box result cut at the half-way intensity between it and its surroundings, when its
    median lies beyond the ring's ``q`` (darker target) or ``1 - q`` (brighter) quantile.

    ``img``: the (denoised) crop; ``fg``, ``inbox``, ``ring``: the result, the box and the ring
    around it. The trimmed result keeps its components of at least a quarter of the largest's
    area; it replaces ``fg`` (and the model is refitted on it) only when it holds at least
    ``least`` of ``fg`` (a partial-volume band goes, not a second tissue).
    """
    rng = ring_range(img, ring, q)
    if not fg.any() or rng is None:
        return fg, model
    lo, r50, hi = rng
    f50 = float(np.median(img[fg]))
    mid = 0.5 * (f50 + float(r50))
    if f50 > hi:
        keep = fg & (img > mid)
    elif f50 < lo:
        keep = fg & (img < mid)
    else:
        return fg, model
    if not keep.any():
        return fg, model
    keep = largest(keep, rel=0.25)
    if int(keep.sum()) < least * int(fg.sum()) or int(keep.sum()) == int(fg.sum()):
        return fg, model
    bgv = np.concatenate([img[ring], img[inbox & ~keep]])
    return keep, ctx.new_model(img[keep], bgv)
