"""The classic engine's key slice: the box's tissue that its surroundings do not show
(``ring_novel``).

GrabCut on a box models the target from its first result and the background from the ring
around the box *and the rest of the box*. Where the target has two tissues, a bright core and
a fainter rim that overlaps the box's corners in intensity (a brain tumour's enhancing core
inside its oedema), the first result takes the core and the rim trains the background: the
result stops at the core. Yet the rim is no tissue of the box's surroundings: a box drawn
tightly around a target holds the target and some of what surrounds it, and the ring around
the box shows what that is. So the box's tissue whose intensity the ring does not show (beyond
the ring's ``q`` and ``1 - q`` quantiles), connected to the result, is target.

Must not import the classic engine's propagation or session modules, torch, FastAPI, Celery or
the CLI.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from segloop.engines.classic.context import ClassicContext
from segloop.engines.classic.intensity import F32, IntensityModel
from segloop.engines.classic.morphology import keep_components
from segloop.types import BoolArray

__all__ = ["MIN_RING", "novel_tissue", "ring_range"]

#: the fewest ring voxels whose quantiles are trusted
MIN_RING = 32


def ring_range(img: F32, ring: BoolArray, q: float) -> tuple[float, float, float] | None:
    """The ring's ``q`` quantile, median and ``1 - q`` quantile of ``img`` (the intensities
    the box's surroundings show), or None when the ring has too few voxels to trust them.
    ``novel_tissue`` and ``contrast.halfway_edge`` both ask whether a target's median lies
    beyond this range."""
    if int(ring.sum()) < MIN_RING:
        return None
    lo, mid, hi = np.quantile(img[ring], [q, 0.5, 1.0 - q])
    return lo, mid, hi


def novel_tissue(ctx: ClassicContext, img: F32, fg: BoolArray, model: IntensityModel,
                 inbox: BoolArray, ring: BoolArray, q: float,
                 least: float) -> tuple[BoolArray, IntensityModel]:
    """The box result plus the box's tissue the ring does not show, connected to it.

    ``img``: the (denoised) crop; ``fg``, ``inbox``, ``ring``: the result, the box and the ring
    around it on that crop; ``q``: the ring's quantiles beyond which a voxel is novel;
    ``least``: the addition is made only when it is at least this fraction of the result's
    area (a few voxels beyond the ring's quantiles are the ring's own tails, not a second
    tissue). Novel voxels are opened by one voxel (4-neighbour cross) first, so isolated
    voxels and one-voxel lines of noise never join. The returned model is refitted on the
    extended result against the ring and the box's rest, as GrabCut fits it.
    """
    rng = ring_range(img, ring, q)
    if not fg.any() or rng is None:
        return fg, model
    lo, _, hi = rng
    f10, f50, f90 = np.quantile(img[fg], [0.1, 0.5, 0.9])
    if f50 > hi:  # a target brighter than its surroundings: its fainter part
        novel = (img > hi) & (img <= f90)
    elif f50 < lo:  # a target darker than its surroundings: its less dark part
        novel = (img < lo) & (img >= f10)
    else:
        return fg, model
    novel &= inbox & ~fg
    novel = ndi.binary_opening(novel)
    add = keep_components(novel | fg, fg) & novel
    if int(add.sum()) < least * int(fg.sum()):
        return fg, model
    out = np.asarray(ndi.binary_fill_holes(fg | add), dtype=bool) & inbox
    bgv = np.concatenate([img[ring], img[inbox & ~ndi.binary_dilation(out)]])
    return out, ctx.new_model(img[out], bgv)
