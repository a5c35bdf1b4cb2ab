"""The classic engine's key slice: which intensity class of the box is the target.

GrabCut on a box starts from the ellipse inscribed in the box against a ring around it. Where
the target is a minority of its own box (a thin oblique pancreas in a box full of fat), the
ellipse is mostly the box's other tissue, and when that tissue also surrounds the box the
result takes it, target and all. Such a result is no tight box's target: its model calls much
of the ring around the box target-like, whereas a box drawn tightly around a target ends where
the target ends. This module retries GrabCut from each intensity class of the ellipse and
keeps a retry that spans the box and explains the ring far less.

Must not import the classic engine's propagation or session modules, torch, FastAPI, Celery or
the CLI (it receives the GrabCut step from ``segment2d`` as a callable, so that module can
import this one).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_multiotsu

from segloop.engines.classic.context import ClassicContext
from segloop.engines.classic.intensity import F32, IntensityModel
from segloop.engines.classic.morphology import box_cover
from segloop.types import BoolArray

__all__ = ["ring_class", "ring_share"]

#: the GrabCut step: initial foreground -> (foreground, model)
Cut = Callable[[BoolArray], tuple[BoolArray, IntensityModel]]


def ring_share(model: IntensityModel, img: F32, ring: BoolArray) -> float:
    """The share of ``ring`` that ``model`` calls target-like (smoothed log-likelihood ratio
    above 0, as GrabCut thresholds it): how much the result's tissue also surrounds the box."""
    if not ring.any():
        return 0.0
    lr = ndi.gaussian_filter(model.log_ratio(img), 0.7)
    return float(np.mean(lr[ring] > 0))


def ring_class(ctx: ClassicContext, img: F32, fg: BoolArray, model: IntensityModel,
               ell: BoolArray, inbox: BoolArray, ring: BoolArray,
               cut: Cut) -> tuple[BoolArray, IntensityModel]:
    """The box result, or a retry from one intensity class of the box that spans the box
    and whose tissue surrounds the box far less.

    The ellipse's voxels are split into 2 and into 3 intensity classes (Otsu thresholds of
    the box's values); GrabCut is rerun from each class's part of the ellipse (at least 8
    voxels). A retry is a candidate when it spans the box (``class_cover`` of its width and
    height: the tight box's target touches all four sides) and its model calls target-like
    less than ``ring_class`` times the share of the ring that the current result's model
    does: the current result's tissue is then the tissue the box sits in, not a target the
    box was drawn around. The candidate calling the least of the ring target-like wins; with
    none, the result stays as it is. ``ring_class`` None disables.
    """
    ratio = ctx.opts.ring_class
    if ratio is None or not ring.any() or not fg.any():
        return fg, model
    share = ring_share(model, img, ring)
    if share <= 0.0:
        return fg, model
    vals = img[inbox]
    if vals.size < 16 or float(vals.max() - vals.min()) <= 2.0 * ctx.noise_level():
        return fg, model
    cover = ctx.opts.class_cover if ctx.opts.class_cover is not None else 0.85
    best: tuple[float, BoolArray, IntensityModel] | None = None
    for n in (2, 3):
        try:
            th = threshold_multiotsu(vals, classes=n)
        except ValueError:  # too few distinct values for n classes
            continue
        lab = np.digitize(img, th)
        for c in range(n):
            init = ell & (lab == c)
            if init.sum() < 8:
                continue
            fg2, model2 = cut(init)
            if not fg2.any() or box_cover(fg2, inbox) < cover:
                continue
            s2 = ring_share(model2, img, ring)
            if s2 < ratio * share and (best is None or s2 < best[0]):
                best = (s2, fg2, model2)
    if best is None:
        return fg, model
    return best[1], best[2]
