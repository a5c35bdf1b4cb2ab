"""The classic engine's key slice: which intensity class of the box is the target, and
where it reaches the box's sides (``spanning_class``, ``ring_class``, ``reach_sides``).

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
from skimage.filters import threshold_multiotsu, threshold_otsu

from segloop.engines.classic.context import ClassicContext
from segloop.engines.classic.intensity import F32, IntensityModel
from segloop.engines.classic.morphology import bbox, box_cover, clean, keep_components, largest
from segloop.types import BoolArray

__all__ = ["reach_sides", "ring_class", "ring_share", "spanning_class"]

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


def reach_sides(ctx: ClassicContext, img: F32, fg: BoolArray, model: IntensityModel,
                inbox: BoolArray, gap: float) -> BoolArray:
    """The box result, extended to the sides of the box it stops short of.

    The box is tight around the target, so the target touches all four of its sides. Where
    the result stops ``gap`` voxels or more short of a side, the cleaning (an opening of a
    fraction of the target's radius) has usually cut a thin part of the target (the tip of a
    lung lobe along the ribs, a process of a vertebra): the target-like tissue (log-likelihood
    ratio > 0, smoothed as in ``grabcut``) connected to the result is taken back where a
    component of it beyond the result reaches such a side.
    """
    bf, bb = bbox(fg), bbox(inbox)
    if bf is None or bb is None:
        return fg
    gx = max(2.0, gap * (bb[2] - bb[0] + 1))
    gy = max(2.0, gap * (bb[3] - bb[1] + 1))
    short = [bf[0] - bb[0] >= gx, bf[1] - bb[1] >= gy, bb[2] - bf[2] >= gx, bb[3] - bf[3] >= gy]
    if not any(short):
        return fg
    side = np.zeros(fg.shape, dtype=bool)
    if short[0]:
        side[bb[0], :] = True
    if short[1]:
        side[:, bb[1]] = True
    if short[2]:
        side[bb[2], :] = True
    if short[3]:
        side[:, bb[3]] = True
    side &= inbox
    lr = ndi.gaussian_filter(model.log_ratio(img), 0.7)
    cand = (lr > 0) & inbox
    extra = keep_components(cand | fg, fg) & ~fg
    extra = keep_components(extra, side)
    if not extra.any():
        return fg
    return np.asarray(ndi.binary_fill_holes(fg | extra), dtype=bool) & inbox


def spanning_class(ctx: ClassicContext, img: F32, fg: BoolArray, model: IntensityModel,
                   inbox: BoolArray, ring: BoolArray,
                   box_scale: float) -> tuple[BoolArray, IntensityModel]:
    """The box result, or the one intensity class of it that alone spans the box.

    The box is tight around the target, so the target touches all four of its sides. A box
    result made of two intensity classes (split at Otsu's threshold, medians more than twice
    the noise level apart) where one class alone spans the box (``class_cover`` of its width
    and height, holes filled) on well under the whole area but no sliver of it (between
    ``1 - class_area`` and ``class_area`` of it: a partial-volume rim is no class) is the target
    plus a neighbour of another intensity that the box also holds (the putamen beside the
    brighter pallidum, a pancreas beside the bowel): that class is kept and the model
    refitted to it. When both classes or neither span the box, the result stays as it is.
    """
    opts = ctx.opts
    vals = img[fg]
    if opts.class_cover is None or vals.size < 50:
        return fg, model
    t = float(threshold_otsu(vals))
    lo, hi = vals[vals <= t], vals[vals > t]
    if lo.size < 8 or hi.size < 8 or float(np.median(hi) - np.median(lo)) < 2.0 * ctx.noise_level():
        return fg, model
    spread = float(lo.std() + hi.std())
    if float(np.median(hi) - np.median(lo)) < opts.class_split * spread:  # one class, halved
        return fg, model
    spanning = []
    for part in (fg & (img <= t), fg & (img > t)):
        part = clean(part, ctx.sp, opts.clean_mm, opts.open_frac * box_scale) & fg
        if not part.any():
            continue
        part = np.asarray(ndi.binary_fill_holes(largest(part)), dtype=bool) & inbox
        share = part.sum() / fg.sum()
        if box_cover(part, inbox) >= opts.class_cover and 1.0 - opts.class_area <= share < opts.class_area:
            spanning.append(part)
    if len(spanning) != 1:
        return fg, model
    part = spanning[0]
    bgv = np.concatenate([img[ring], img[inbox & ~ndi.binary_dilation(part)]])
    return part, ctx.new_model(img[part], bgv)
