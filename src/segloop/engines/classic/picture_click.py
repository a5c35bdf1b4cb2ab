"""Corrective clicks on a 2D picture (option ``picture_click``): a graph cut inside the box.

On a volume a positive click grows a region by intensity similarity within a disk around the
click (``segment2d.grow``) and a negative click carves by a random walk (``segment2d.carve``):
sizes meant for targets some 20-200 voxels across whose missed or spurious part is small. On
a picture (segmented at the reduced scale of ``picture_px``) the part a click marks is often a
large, elongated region along the mask: a lung's base, a polyp's paler half, a lesion's rim
that the box's model called background. Both steps then took a disk-sized fraction of it
(``benchmarks/devset.md``, twelfth pass (c2d)). Here a click re-runs the box's cut on the
picture with the click as a hard seed:

- positive (:func:`picture_add`): the foreground density is the mask's tissue plus the
  click's (a disk of half the click's distance to the mask, weighted as much as the mask);
  the background density is the ring around the box (the box's own background); an s-t
  minimum cut (:func:`~segloop.engines.classic.graphcut.min_cut`, contrast-weighted
  4-neighbour terms of strength ``picture_click``) inside the box, outside the mask and
  within :data:`ADD_REACH` times (twice the click's distance to the mask) of the click, with
  the click's disk hard foreground; the part connected to the click is added, together with
  the volume step's region (its similarity flood is the more complete one where the missed
  part is a compact patch of one tissue: the union lowered 2 clicks on the 2D set, the cut
  alone 6).
- negative (:func:`picture_remove`): the mask's tissue against the ring's plus the click's
  (a disk of half the click's depth in the mask, weighted as much as the ring); the cut runs
  on the mask, the click's disk hard background and earlier positive clicks hard foreground;
  the part of the mask the cut leaves out, connected to the click and within
  :data:`REMOVE_REACH` times (twice the click's depth) of it, is removed.

The mask so far is the prior: a click only adds to it (positive) or removes from it (negative)
around the click, and the rest stays as it was. A click outside the box, or without tissue to
fit, falls back to the volume steps. A box over the whole picture has no ring: the background
density is then flat (positive) or the click's alone (negative).

Must not import the classic engine's propagation or session modules, torch, FastAPI, Celery or
the CLI.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from segloop.engines.classic.context import ClassicContext
from segloop.engines.classic.graphcut import min_cut
from segloop.engines.classic.intensity import F32
from segloop.engines.classic.morphology import Crop, ball, bbox, disk, keep_components
from segloop.types import BoolArray

__all__ = ["ADD_REACH", "REMOVE_REACH", "picture_add", "picture_remove"]

#: a positive click's region reaches this many times twice its distance to the mask (measured
#: on the 2D set: 1.5-3 give the same mean after 3 clicks; 2 lowered the fewest clicks)
ADD_REACH = 2.0
#: a negative click's removal reaches this many times twice its depth in the mask
REMOVE_REACH = 1.0
_HARD = 20.0  # a unary term beyond any clipped log-likelihood ratio (+-6)


def _box_crop(ctx: ClassicContext, box: tuple[int, int, int, int], current: BoolArray
              ) -> tuple[Crop, BoolArray, BoolArray]:
    """The crop around the box and the mask (plus the box's background ring), the box inside
    it and that ring, as crop-sized masks."""
    nx, ny = ctx.shape[:2]
    x0, y0, x1, y1 = box
    bb = bbox(current)
    if bb is not None:
        x0, y0, x1, y1 = min(x0, bb[0]), min(y0, bb[1]), max(x1, bb[2]), max(y1, bb[3])
    mx, my = ctx.margin(ctx.opts.ring_mm)
    crop = Crop.around((x0, y0, x1, y1), mx, my, nx, ny)
    inbox = np.zeros((crop.x1 - crop.x0, crop.y1 - crop.y0), dtype=bool)
    inbox[box[0] - crop.x0:box[2] - crop.x0 + 1, box[1] - crop.y0:box[3] - crop.y0 + 1] = True
    ring = ndi.binary_dilation(inbox, ball(ctx.opts.ring_mm, ctx.sp)) & ~inbox
    return crop, inbox, ring


def _inside(box: tuple[int, int, int, int], x: int, y: int) -> bool:
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


def _weighted(vals: F32, n: int) -> F32:
    """``vals`` repeated to about ``n`` samples (a density weighted as much as ``n`` others)."""
    return np.asarray(np.repeat(vals, max(1, n // max(vals.size, 1))), dtype=np.float32)


def picture_add(ctx: ClassicContext, object_id: int, z: int, x: int, y: int, current: BoolArray,
                box: tuple[int, int, int, int]) -> BoolArray | None:
    """The region a positive click at (x, y) adds to ``current`` (``(X, Y)``) on a picture
    with ``box``; None where the volume step should act (no mask yet, a click outside the
    box or on the mask)."""
    weight = ctx.opts.picture_click
    if weight is None or not current.any() or current[x, y] or not _inside(box, x, y):
        return None
    sp = ctx.sp
    crop, inbox, ring = _box_crop(ctx, box, current)
    img = ctx.smoothed(z, crop, object_id)
    cur = current[crop.sl]
    px, py = x - crop.x0, y - crop.y0
    d = ctx.distance_to(current, x, y, float(np.hypot(*cur.shape)) * max(sp))
    seed = disk(img.shape, px, py, max(1.5, 0.5 * d), sp) & ~cur
    seed[px, py] = True
    fg = np.concatenate([img[cur], _weighted(img[seed], int(cur.sum()))])
    model = ctx.new_model(fg, img[ring])
    u = np.asarray(ndi.gaussian_filter(model.log_ratio(img), 0.7), dtype=np.float32)
    u[seed] = _HARD
    allowed = inbox & ~cur & disk(img.shape, px, py, ADD_REACH * (2.0 * d + max(sp)), sp)
    region = keep_components(min_cut(u, img, allowed, weight) | seed, seed)
    region = np.asarray(ndi.binary_fill_holes(region), dtype=bool) & ~cur
    out = np.zeros(current.shape, dtype=bool)
    out[crop.sl] = region
    return out


def picture_remove(ctx: ClassicContext, object_id: int, z: int, x: int, y: int,
                   current: BoolArray, box: tuple[int, int, int, int],
                   pos: list[tuple[int, ...]]) -> BoolArray | None:
    """The part of ``current`` (``(X, Y)``) a negative click at (x, y) removes on a picture
    with ``box``; ``pos``: the positive clicks given before it (hard foreground). None where
    the volume step should act (a click off the mask or outside the box, too little mask)."""
    weight = ctx.opts.picture_click
    if weight is None or not current[x, y] or not _inside(box, x, y):
        return None
    sp = ctx.sp
    crop, _inbox, ring = _box_crop(ctx, box, current)
    cur = current[crop.sl]
    px, py = x - crop.x0, y - crop.y0
    depth = ndi.distance_transform_edt(np.pad(cur, 1), sampling=sp)[1:-1, 1:-1]
    rho = float(depth[px, py])
    seed = disk(cur.shape, px, py, max(1.5, 0.5 * rho), sp) & cur
    seed[px, py] = True
    if int((cur & ~seed).sum()) < 8:
        return None
    img = ctx.smoothed(z, crop, object_id)
    bg = np.concatenate([img[ring], _weighted(img[seed], int(ring.sum()))])
    model = ctx.new_model(img[cur & ~seed], bg)
    u = np.asarray(ndi.gaussian_filter(model.log_ratio(img), 0.7), dtype=np.float32)
    u[seed] = -_HARD
    for p in pos:
        qx, qy = int(p[0]) - crop.x0, int(p[1]) - crop.y0
        if 0 <= qx < cur.shape[0] and 0 <= qy < cur.shape[1] and not seed[qx, qy]:
            u[qx, qy] = _HARD
    gone = cur & ~min_cut(u, img, cur, weight)
    gone &= disk(cur.shape, px, py, REMOVE_REACH * (2.0 * rho + max(sp)), sp)
    gone = keep_components(gone | seed, seed)
    out = np.zeros(current.shape, dtype=bool)
    out[crop.sl] = gone
    return out
