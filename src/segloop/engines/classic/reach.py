"""How far a click's change should reach when nothing in the image bounds it (options
``window_fill``, ``hold_rim``, ``rim_cut``, ``rim_add`` and ``resume_end``).

A positive click grows the target-like tissue connected to it inside a window (a disk whose
radius comes from the click's distance to the mask, or the object's size on a slice where the
object was absent). Where the tissue around the missed part looks like the target too (the
intrahepatic vena cava in the liver, the pancreas among bowel loops on MR), the region fills
the window: its outline is the window's, not an edge of the image, and it is as large as the
window however small the missed part is; the propagation then carries it to every slice up
to the next anchor (``benchmarks/devset.md``, eleventh pass (b)). :func:`window_filled` tells
such a region (most of the window's rim in it); when a local model of the click's tissue
against its surroundings (``click_region.local_region``) finds no edge either, the grown
region is cut to the half window, the click's nearest surroundings, instead.

A negative click that trims a slice's rim (the removed voxels all on the removed part's
border: no interior) corrects that slice's outline by a voxel. The propagation carried the
trim on, slice after slice, as the removal of the same rim, up to the next anchor: where the
neighbouring slices' outline was right (a tapering muscle, a vessel), every slice lost its
rim on that side. :func:`rim_only` tells such a removal; with ``hold_rim`` it stays on its
slice.

The simulated user's negative click lies at the most interior voxel of the largest spurious
region; when that voxel is on the mask's outermost layer (a voxel with a 4-neighbour
outside the mask), the spurious region is one voxel thick: a rim laid on the target. The
carving still removed a disk around the click (its seed and the random walk's side), and
so the target's voxels inside the rim with it: such clicks removed more of the target than
of the rim. :func:`rim_cut` keeps only the outermost layer of such a cut (option ``rim_cut``).
A positive click next to the mask (a missed one-voxel rim) is the same on the other side: the
region grown from it (at least the click's seed disk, 1.5 voxels) reached beyond the rim into
the background, so most such clicks added more background than target; applied to the mask's
complement, :func:`rim_cut` keeps the layer along the mask (option ``rim_add``).

A positive click on the last slice that holds the object, beside it, restarts the tracking
on the slices past the object's end (``propagation.propagate_delta``) with none of the checks
that end a propagation from a box: it ran on while the tracking re-found anything, 7 slices
of 11-28 false voxels each past a hippocampus's end. :func:`run_on` applies the box
propagation's end rule there (``end_frac`` of the clicked slice's area; option
``resume_end``).

Masks are ``(X, Y)`` bool slices or crops. Must not import the classic engine's
segmentation, propagation or session modules, torch, FastAPI, Celery or the CLI.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from segloop.engines.classic.morphology import Crop, bbox, keep_components
from segloop.engines.classic.options import ClassicOptions
from segloop.types import BoolArray

__all__ = ["rim_cut", "rim_only", "run_on", "window_filled"]


def window_filled(region: BoolArray, win: BoolArray, frac: float) -> bool:
    """Whether ``region`` fills the window ``win`` (both on the same grid): at least ``frac``
    of the window's rim (its voxels next to the outside of the window) lies in the region,
    so the region's outline is mostly the window's."""
    rim = win & ~ndi.binary_erosion(win, border_value=0)
    n = int(rim.sum())
    return n > 0 and int((rim & region).sum()) >= frac * n


def rim_only(before: BoolArray, after: BoolArray) -> bool:
    """Whether a click's change of a slice (``before`` -> ``after``) only trimmed a rim: it
    removed voxels, added none, left the slice non-empty, and no removed voxel has all four
    in-plane neighbours removed too (no interior)."""
    removed = before & ~after
    if (after & ~before).any() or not removed.any() or not after.any():
        return False
    return not bool(np.asarray(ndi.binary_erosion(removed, border_value=0)).any())


def rim_cut(cut: BoolArray, mask: BoolArray, x: int, y: int) -> BoolArray:
    """``cut`` (what a negative click at (x, y) removes from ``mask``, both ``(X, Y)``)
    restricted to the mask's outermost layer when the click lies on it: the layer's voxels of
    the cut connected (8-connectivity) to the click, with the click; otherwise ``cut``
    itself. For a positive click pass its region and the mask's complement: the layer along
    the mask."""
    bb = bbox(cut)
    if bb is None or not mask[x, y]:
        return cut
    crop = Crop.around((min(bb[0], x), min(bb[1], y), max(bb[2], x), max(bb[3], y)), 1, 1, *mask.shape)
    m = mask[crop.sl]
    layer = m & ~ndi.binary_erosion(m, border_value=0)
    px, py = x - crop.x0, y - crop.y0
    if not layer[px, py]:
        return cut
    seed = np.zeros(m.shape, dtype=bool)
    seed[px, py] = True
    out = np.zeros_like(cut)
    out[crop.sl] = keep_components((cut[crop.sl] & layer) | seed, seed)
    return out


def run_on(opts: ClassicOptions, tracked: BoolArray, clicked: BoolArray) -> bool:
    """With ``resume_end`` (and ``end_frac``) set: whether ``tracked``, a slice re-tracked
    past the object's end from a click's addition, is under ``end_frac`` of the area of the
    clicked slice's mask ``clicked``, so that the object has ended there (as
    ``propagation.propagate_from`` ends it)."""
    if opts.resume_end is None or opts.end_frac is None:
        return False
    return bool(tracked.sum() < opts.end_frac * clicked.sum())
