"""The classic engine on one slice: a box (GrabCut-like), positive clicks (region growing) and
negative clicks (carving), all on a crop around the object.

Must not import the classic engine's propagation or session modules, torch, FastAPI, Celery or
the CLI.
"""

from __future__ import annotations

import warnings

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi
from skimage.segmentation import random_walker

from segloop.engines.classic.box_class import reach_sides, ring_class, spanning_class
from segloop.engines.classic.click_region import local_region, smaller_local
from segloop.engines.classic.context import ClassicContext
from segloop.engines.classic.contrast import halfway_edge
from segloop.engines.classic.fat import soft_part
from segloop.engines.classic.intensity import F32, IntensityModel
from segloop.engines.classic.leak import leak_part
from segloop.engines.classic.morphology import (
    Crop,
    ball,
    bbox,
    box_cover,
    clean,
    disk,
    keep_components,
    largest,
    open_disk,
)
from segloop.engines.classic.novel import novel_tissue
from segloop.engines.classic.picture_click import picture_add, picture_remove
from segloop.engines.classic.reach import rim_cut, window_filled
from segloop.types import BoolArray, Prompts

__all__ = ["box_segment", "carve", "grabcut", "grow", "nearer_than", "prompted_slice",
           "reach_sides", "spanning_class"]


def prompted_slice(ctx: ClassicContext, object_id: int, z: int, prompts: Prompts,
                   base: BoolArray | None) -> BoolArray:
    """The mask of slice z from its prompts: box segmentation (or ``base``) + point edits."""
    nx, ny = ctx.shape[:2]
    if prompts.box is not None:
        m = box_segment(ctx, object_id, z, prompts.box)
    elif base is not None:
        m = base.copy()
    else:
        m = np.zeros((nx, ny), dtype=bool)
    neg = [tuple(p) for p, lab in zip(prompts.points.tolist(), prompts.labels.tolist(),
                                      strict=True) if lab != 1]
    pos: list[tuple[int, ...]] = []  # the positive clicks given before the current point
    # a picture's clicks re-run the box's cut around them (picture_click.py)
    pbox = prompts.box if ctx.picture and ctx.opts.picture_click is not None else None
    for (x, y), lab in zip(prompts.points.tolist(), prompts.labels.tolist(), strict=True):
        if lab == 1:
            if not m[x, y]:
                add = grow(ctx, object_id, z, x, y, m)
                pic = None if pbox is None else picture_add(ctx, object_id, z, x, y, m, pbox)
                if pic is not None:  # the cut's region and the grown one (picture_click.py)
                    add |= pic
                add = nearer_than(ctx, add, (x, y), neg)
                m |= add if ctx.opts.rim_add is None else rim_cut(add, ~m, x, y)  # reach.py
            pos.append((x, y))
        elif m[x, y]:
            # a negative click acts as it did when it was given: a positive click given
            # later adds its own region and never brings back what this one removed
            cut = None if pbox is None else picture_remove(ctx, object_id, z, x, y, m, pbox, pos)
            if cut is None:
                cut = carve(ctx, object_id, z, x, y, m, pos)
            m &= ~(cut if ctx.opts.rim_cut is None else rim_cut(cut, m, x, y))  # reach.py
    if prompts.box is None and base is None and object_id not in ctx.models and m.any():
        ctx.learn_from_mask(object_id, z, m)
    return m


def nearer_than(ctx: ClassicContext, region: BoolArray, click: tuple[int, int],
                others: list[tuple[int, ...]]) -> BoolArray:
    """The part of ``region`` (grown from a positive click) nearer (mm) to the click than
    to every negative click of the slice, connected to the click: a positive click never
    takes back what a negative click beside it said is not the target."""
    if not others or not region.any():
        return region
    bb = bbox(region)
    assert bb is not None
    crop = Crop.around(bb, 1, 1, *region.shape)
    xx = (np.arange(crop.x0, crop.x1)[:, None]).astype(np.float64) * ctx.sp[0]
    yy = (np.arange(crop.y0, crop.y1)[None, :]).astype(np.float64) * ctx.sp[1]

    def dist2(p: tuple[int, ...]) -> npt.NDArray[np.float64]:
        return np.asarray((xx - p[0] * ctx.sp[0]) ** 2 + (yy - p[1] * ctx.sp[1]) ** 2)

    mine = dist2(click)
    keep = region[crop.sl].copy()
    for q in others:
        keep &= mine < dist2(q)
    seed = np.zeros(keep.shape, dtype=bool)
    seed[click[0] - crop.x0, click[1] - crop.y0] = True
    out = np.zeros(region.shape, dtype=bool)
    out[crop.sl] = keep_components(keep | seed, seed)
    return out


def box_segment(ctx: ClassicContext, object_id: int, z: int, box: tuple[int, int, int, int]) -> BoolArray:
    """GrabCut-like segmentation inside ``box`` on slice z; sets the object's model."""
    opts, sp = ctx.opts, ctx.sp
    nx, ny = ctx.shape[:2]
    x0, y0, x1, y1 = box
    mx, my = ctx.margin(opts.ring_mm)
    crop = Crop.around(box, mx, my, nx, ny)
    shape2 = (crop.x1 - crop.x0, crop.y1 - crop.y0)
    inbox = np.zeros(shape2, dtype=bool)
    bx0, by0 = x0 - crop.x0, y0 - crop.y0
    inbox[bx0:x1 - crop.x0 + 1, by0:y1 - crop.y0 + 1] = True
    ring = ndi.binary_dilation(inbox, ball(opts.ring_mm, sp)) & ~inbox
    if not ring.any():
        ring = ~inbox
    # initial foreground: the ellipse inscribed in the box
    cx, cy = (x0 + x1) / 2 - crop.x0, (y0 + y1) / 2 - crop.y0
    ax, ay = max((x1 - x0) / 2, 0.5), max((y1 - y0) / 2, 0.5)
    xx = (np.arange(shape2[0])[:, None] - cx) / ax
    yy = (np.arange(shape2[1])[None, :] - cy) / ay
    ell = (xx**2 + yy**2 <= 1.0) & inbox
    core = (xx**2 + yy**2 <= 0.25) & inbox
    box_scale = 0.5 * float(np.sqrt((x1 - x0 + 1) * sp[0] * (y1 - y0 + 1) * sp[1]))
    ctx.set_sigma(object_id, ctx.img[crop.x0:crop.x1, crop.y0:crop.y1, z], ell, ring, box_scale)
    img = ctx.smoothed(z, crop, object_id)
    fg, model = grabcut(ctx, img, ell, core, inbox, ring, box_scale)
    cover = box_cover(fg, inbox)
    if opts.tight_box is not None and cover < opts.tight_box:
        # the box is tight around the target, so the target spans it; this result does
        # not (a dark core inside a brighter target, say): the other tissue of the box is
        # taken instead when it does span it
        rejected = ndi.binary_dilation(fg, ball(max(sp), sp))
        other = ell & ~rejected
        if other.sum() >= 8:
            fg2, model2 = grabcut(ctx, img, other, other, inbox, ring, box_scale, rejected)
            # what it encloses (the rejected core) belongs to it
            se = ball(2.0 * max(sp), sp)
            pad = se.shape[0]
            closed = ndi.binary_closing(np.pad(fg2, pad), se)[pad:-pad, pad:-pad]
            fg2 = fg2 | (ndi.binary_fill_holes(closed) & rejected & inbox)
            if box_cover(fg2, inbox) >= 0.85:
                fg, model = fg2, model2
    if opts.class_cover is not None:
        fg, model = spanning_class(ctx, img, fg, model, inbox, ring, box_scale)
    if opts.ring_class is not None:  # the box's tissue that surrounds it is no target
        fg, model = ring_class(ctx, img, fg, model, ell, inbox, ring,
                               lambda init: grabcut(ctx, img, init, init, inbox, ring, box_scale))
    if opts.fat_hu is not None:  # CT: fat is no soft-tissue target (fat.py)
        fg, model = soft_part(ctx, img, fg, model, inbox, ring)
    if opts.reach_gap is not None:
        fg = reach_sides(ctx, img, fg, model, inbox, opts.reach_gap)
    if opts.ring_novel is not None:  # the box's tissue its surroundings do not show
        fg, model = novel_tissue(ctx, img, fg, model, inbox, ring, opts.ring_novel,
                                 opts.novel_least)
    if opts.edge_mid is not None:  # a high-contrast target ends half-way (contrast.py)
        fg, model = halfway_edge(ctx, img, fg, model, inbox, ring, opts.edge_mid,
                                 opts.edge_least)
    ctx.models[object_id] = model
    ctx.set_support(object_id, img[fg], ctx.img[crop.x0:crop.x1, crop.y0:crop.y1, z][fg])
    ctx.scale[object_id] = float(np.sqrt(max(fg.sum(), 1) * sp[0] * sp[1] / np.pi))
    out = np.zeros((nx, ny), dtype=bool)
    out[crop.sl] = fg
    return out


def grabcut(ctx: ClassicContext, img: F32, init: BoolArray, core: BoolArray, inbox: BoolArray,
            ring: BoolArray, box_scale: float,
            exclude: BoolArray | None = None) -> tuple[BoolArray, IntensityModel]:
    """GrabCut-like iterations on a crop: fit foreground (from ``init``) and background
    (``ring`` and the box's rest) densities, threshold the log-likelihood ratio inside the
    box, keep the components touching ``core``; returns the foreground and the model.
    Voxels of ``exclude`` may end up inside the foreground (filled holes) but never train
    its density."""
    fg = init
    model = ctx.new_model(img[fg], img[ring])
    for _ in range(3):
        lr = model.log_ratio(img)
        cand = (ndi.gaussian_filter(lr, 0.7) > 0) & inbox
        cand = clean(cand, ctx.sp, ctx.opts.clean_mm, ctx.opts.open_frac * box_scale)
        cand &= inbox
        if not cand.any():
            break
        sel = keep_components(cand, core)
        if not sel.any():
            sel = largest(cand)
        fg = largest(sel, rel=0.0) | (sel & largest(sel, rel=0.25))
        bgv = np.concatenate([img[ring], img[inbox & ~ndi.binary_dilation(fg)]])
        train = fg if exclude is None else fg & ~exclude
        model = ctx.new_model(img[train if train.sum() >= 8 else fg], bgv)
    return fg, model


def grow(ctx: ClassicContext, object_id: int, z: int, x: int, y: int, current: BoolArray) -> BoolArray:
    """A region grown from a positive click: intensity-consistent and connected to it."""
    opts, sp = ctx.opts, ctx.sp
    nx, ny = ctx.shape[:2]
    model = ctx.models.get(object_id)
    first = model is None and not current.any()
    scale = ctx.scale.get(object_id, 10.0)
    # a first click (no model yet) floods as far as the intensity stays the same
    r = opts.wand_mm if first else max(5.0, 1.5 * scale)
    if current.any():
        # the click marks the middle of a missed region: it reaches about as far again
        # as the click is from the current mask
        d = ctx.distance_to(current, x, y, r)
        r = min(r, max(2.0 * d + max(sp), 3.0 * max(sp)))
    mx, my = ctx.margin(r)
    crop = Crop.around((x, y, x, y), mx, my, nx, ny)
    img = ctx.smoothed(z, crop, object_id)
    px, py = x - crop.x0, y - crop.y0
    win = disk(img.shape, px, py, r, sp)
    seed = disk(img.shape, px, py, max(1.5, 1.1 * min(sp)), sp)
    region = np.zeros(img.shape, dtype=bool)
    found: list[BoolArray] = []

    def scale_local() -> BoolArray:
        """The click's local region up to the object's scale (click_region.py), made once:
        both the window check and the empty-slice check below may ask for it."""
        if not found:
            found.append(local_region(ctx, object_id, z, x, y, current, max(0.6 * r, scale)))
        return found[0]

    if model is not None:
        lr = ndi.gaussian_filter(model.log_ratio(img), 0.7)
        if lr[px, py] > 0:
            cand = (lr > 0) & win
            cand = ndi.binary_opening(cand, ball(opts.clean_mm, sp)) | seed
            region = keep_components(cand & win, seed)
            if (opts.window_fill is not None and window_filled(region, win, opts.window_fill)
                    and not scale_local().any()):
                # the window bounds it and no local edge does: the click's nearest part (reach.py)
                region = keep_components(region & disk(img.shape, px, py, 0.5 * r, sp), seed)
    smaller = smaller_local(ctx, current, region, first, scale_local)
    if smaller.any():  # the object's model took the surroundings too (click_region.py)
        return smaller
    if (not region.any() and opts.own_region is not None and not first
            and (opts.own_region_empty is None or not current.any())):
        # the model calls the click background: a local model of the click's tissue
        # decides, up to the object's scale (see click_region.py)
        local = local_region(ctx, object_id, z, x, y, current, max(0.6 * r, opts.own_region * scale))
        if local.any():
            return local
    if not region.any():
        # flood by similarity to the click's neighbourhood
        vals = img[disk(img.shape, px, py, max(2.0, 1.5 * min(sp)), sp)]
        mu = float(np.median(vals))
        tol = 2.5 * max(ctx.noise_level(), float(vals.std()))
        cand = (np.abs(img - mu) <= tol) & (win if first else disk(img.shape, px, py, 0.6 * r, sp))
        if first:
            # cut thin bridges into neighbouring tissue of the same intensity
            opened = open_disk(cand, sp, max(opts.clean_mm, 2.0))
            if (opened & seed).any():
                cand = opened
        region = keep_components(cand | seed, seed)
    region = np.asarray(ndi.binary_fill_holes(region | seed), dtype=bool)
    out = np.zeros((nx, ny), dtype=bool)
    out[crop.sl] = region
    return out


def carve(ctx: ClassicContext, object_id: int, z: int, x: int, y: int, current: BoolArray,
          pos: list[tuple[int, ...]]) -> BoolArray:
    """The part of ``current`` to remove for a negative click at (x, y).

    On background-like intensity (a filled hole, a partial-volume rim) the connected
    background-like part of the mask around the click goes; on foreground-like intensity
    the mask is split by a marker watershed between the click and the mask far from it.
    """
    opts, sp = ctx.opts, ctx.sp
    nx, ny = ctx.shape[:2]
    lab, _ = ndi.label(current, structure=np.ones((3, 3), bool))
    comp = lab == lab[x, y]
    bb = bbox(comp)
    assert bb is not None
    crop = Crop.around(bb, 2, 2, nx, ny)
    c = comp[crop.sl]
    px, py = x - crop.x0, y - crop.y0
    model = ctx.models.get(object_id)
    if model is not None:
        lr = ndi.gaussian_filter(model.log_ratio(ctx.smoothed(z, crop, object_id)), 0.7)
        if lr[px, py] < 0:
            seed = np.zeros(c.shape, dtype=bool)
            seed[px, py] = True
            bgl = keep_components(c & (lr < 0), seed)
            out = np.zeros((nx, ny), dtype=bool)
            out[crop.sl] = ndi.binary_dilation(bgl) & c
            return out
    inside = ndi.distance_transform_edt(np.pad(c, 1), sampling=sp)[1:-1, 1:-1]
    rho = float(inside[px, py])
    has_pos = any(0 <= int(p[0]) - crop.x0 < c.shape[0] and 0 <= int(p[1]) - crop.y0 < c.shape[1]
                  and c[int(p[0]) - crop.x0, int(p[1]) - crop.y0] for p in pos)
    deep = float(inside.max())
    if (opts.drop_central is not None and not has_pos and rho >= opts.drop_central * deep
            and deep >= 3.0 * max(sp)):
        # a click at the very middle of a component rejects the component as a whole
        # (only where the component is thick enough for "the middle" to mean something)
        out = np.zeros((nx, ny), dtype=bool)
        out[crop.sl] = c
        return out
    neg = disk(c.shape, px, py, max(rho * opts.neg_frac, min(sp)), sp) & c
    xx = (np.arange(c.shape[0])[:, None] - px) * sp[0]
    yy = (np.arange(c.shape[1])[None, :] - py) * sp[1]
    dist = np.sqrt(xx**2 + yy**2)
    reach = dist <= (opts.carve_far + 0.5) * rho + 2 * max(sp)
    # positive markers: the mask's deeper core, away from the click
    posm = (dist > opts.carve_far * rho + max(sp)) & c
    for p in pos:
        qx, qy = int(p[0]) - crop.x0, int(p[1]) - crop.y0
        if 0 <= qx < c.shape[0] and 0 <= qy < c.shape[1] and c[qx, qy]:
            posm[qx, qy] = True
    posm &= ~neg
    if not posm.any():
        # nothing far from the click: keep the mask's rim as the competing marker, so an
        # inner region bounded by an edge (a filled hole) goes and the outline stays
        posm = c & (inside <= 1.01 * max(sp)) & ~disk(c.shape, px, py, rho, sp)
    img = ctx.smoothed(z, crop, object_id)
    if not posm.any():
        cut = c & reach
    else:
        markers = np.zeros(c.shape, dtype=np.int32)
        markers[~c] = -1
        markers[posm] = 1
        markers[neg] = 2
        # a random walk on the image: intensity edges separate, flat regions split by distance
        scale = 3.0 * max(ctx.noise_level(), 1e-3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # probability-range tolerance notes
            ws = random_walker(img / scale, markers, beta=1.0, mode="cg", tol=1e-3)
        cut = (ws == 2) & reach
    if opts.leak_overlap is not None and model is not None:
        # the click's tissue differs from the object's: the leak of that tissue goes too
        cut |= leak_part(img, c, inside, neg, (px, py), model, ctx.noise_level(), sp,
                         opts.leak_overlap, opts.leak_depth)
    out = np.zeros((nx, ny), dtype=bool)
    out[crop.sl] = cut
    return out
