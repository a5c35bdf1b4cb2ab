"""Where a target stacked against copies of itself ends along z: a thin dark sheet across it.

A vertebral body tracked from one box runs on through the intervertebral disc into the next
body: the disc is a thin plate of lower intensity between two bodies of the same intensity,
and it is seldom parallel to the slices (the lordosis tilts it), so no single slice shows
it and the tracked mask's per-slice statistics (area, median, the fraction the key slice's
model calls target) hardly dip there. Seen per column of voxels along z, it does show: each
column of the target's cross-section crosses the plate once, somewhere within a few slices.

The test, per direction of a propagation, on the chain of slice masks from the anchor on:

- a voxel *dips* where its (denoised) intensity lies more than ``depth`` below the highest
  value of its column on BOTH sides within ``w`` slices (inside the masks), ``depth`` being
  ``sheet_depth`` times the anchor mask's intensity IQR and at least ``sheet_noise`` times
  the noise level;
- a *sheet* crosses the target at slice i when at least ``sheet_cover`` of the columns
  inside the masks of slices i .. i + w - 1 dip on one of those slices, while in a ring
  3-9 mm outside the masks under ``sheet_ring`` of the columns do: the dark plate belongs to
  the target, not to a fluctuation of the whole image (an MR slice's intensity, a vessel's
  flow artefact, a cord in its bony canal);
- ``w`` is thin against the target: ``sheet_scale`` times the anchor's equivalent radius, in
  slices (at least one); and the sheet must have ``w`` slices of target on the anchor's side.

The target ends at the first such slice; ``sheet_bands`` gives every sheet of the chain (with
``sheet_resume``, a positive click past the first resumes up to the next).
Masks are ``(X, Y)`` bool slices of one ``(X, Y, Z)`` volume. Must not import the classic
engine's propagation or session modules, torch, FastAPI, Celery or the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from segloop.engines.classic.context import ClassicContext
from segloop.engines.classic.morphology import Crop, bbox
from segloop.types import BoolArray

__all__ = ["Bands", "column_dips", "sheet_bands", "sheet_cover"]

_RING_MM = (3.0, 9.0)


def column_dips(stack: npt.NDArray[np.floating], masks: BoolArray, w: int, depth: float) -> BoolArray:
    """Which voxels of the ``(X, Y, N)`` ``stack`` (inside ``masks``, same shape) lie more than
    ``depth`` below the highest value of their column within ``w`` slices on each side (only
    values inside ``masks`` count; the first and last slices never dip)."""
    n = stack.shape[2]
    out = np.zeros(stack.shape, dtype=bool)
    if n < 3:
        return out
    vals = np.where(masks, stack, np.float32(-np.inf)).astype(np.float32)
    # running maxima along z (O(n) each): trailing[j] = max(vals[j - w + 1 .. j]),
    # leading[j] = max(vals[j .. j + w - 1]); beyond the chain counts as -inf
    trailing = ndi.maximum_filter1d(vals, size=w, axis=2, origin=(w - 1) // 2, mode="constant",
                                    cval=-np.inf)
    leading = ndi.maximum_filter1d(vals, size=w, axis=2, origin=-(w // 2), mode="constant",
                                   cval=-np.inf)
    side = np.minimum(trailing[:, :, :n - 2], leading[:, :, 2:])  # left of i, right of i
    out[:, :, 1:n - 1] = masks[:, :, 1:n - 1] & (side - stack[:, :, 1:n - 1] > depth)
    return out


def sheet_cover(masks: BoolArray, dips: BoolArray, w: int) -> npt.NDArray[np.float64]:
    """Per slice i of the ``(X, Y, N)`` chain: the fraction of the columns inside every mask
    of slices i .. i + w - 1 (never the last slice) that dip on one of them; 0 where none."""
    n = masks.shape[2]
    cov = np.zeros(n)
    for i in range(1, n - 1):
        j = min(n - 1, i + w)
        foot = masks[:, :, i:j].all(axis=2)
        total = int(foot.sum())
        if total:
            cov[i] = int((dips[:, :, i:j].any(axis=2) & foot).sum()) / total
    return cov


class Bands(NamedTuple):
    """What :func:`sheet_bands` found: ``starts`` (chain indices where a sheet's band begins,
    in order), ``w`` (the band's thickness in slices: the sheet lies within i .. i + w - 1)
    and ``keep`` (with ``sheet_column``: for the first band's slices, in order, the part of
    each mask whose column has not yet crossed its dip, the plate still ahead; else empty)."""

    starts: list[int]
    w: int
    keep: list[BoolArray]


def sheet_bands(ctx: ClassicContext, object_id: int, chain: Sequence[tuple[int, BoolArray]]) -> Bands:
    """Every dark sheet's band along ``chain`` ((slice z, mask) pairs, the anchor's first, then
    the tracked slices in order; see the module docstring), see :class:`Bands`: the target
    ends at the first band's start; none when the option is off or the chain too short."""
    opts = ctx.opts
    if opts.sheet_cover is None or len(chain) < 3:
        return Bands([], 0, [])
    anchor = chain[0][1]
    area = int(anchor.sum())
    if area == 0:
        return Bands([], 0, [])
    sp = ctx.sp
    radius = float(np.sqrt(area * sp[0] * sp[1] / np.pi))
    w = max(1, round(opts.sheet_scale * radius / ctx.sz))
    if len(chain) <= w + 1:
        return Bands([], w, [])
    union = np.zeros_like(anchor)
    for _, m in chain:
        union |= m
    bb = bbox(union)
    assert bb is not None
    crop = Crop.around(bb, *ctx.margin(_RING_MM[1]), *union.shape)
    raw = ctx.img[crop.x0:crop.x1, crop.y0:crop.y1, chain[0][0]][anchor[crop.sl]]
    q75, q25 = np.percentile(raw, [75, 25])
    depth = max(opts.sheet_depth * float(q75 - q25), opts.sheet_noise * ctx.noise_level())
    masks = np.stack([m[crop.sl] for _, m in chain], axis=2)
    stack = np.stack([ctx.smoothed(z, crop, object_id) for z, _ in chain], axis=2)
    ring = np.zeros_like(masks)
    for i in range(masks.shape[2]):
        dist = ndi.distance_transform_edt(~masks[:, :, i], sampling=sp)
        ring[:, :, i] = (dist > _RING_MM[0]) & (dist <= _RING_MM[1])
    dips = column_dips(stack, masks, w, depth)
    inside = sheet_cover(masks, dips, w)
    outside = sheet_cover(ring, column_dips(stack, ring, w, depth), w)
    starts = [i for i in range(w, len(chain))
              if inside[i] > opts.sheet_cover and outside[i] < opts.sheet_ring]
    keep: list[BoolArray] = []
    if starts and opts.sheet_column is not None:
        i = starts[0]
        for k in range(i, min(i + w, len(chain))):
            # the tilted plate crosses each column at its own slice: a column keeps its
            # voxels until its dip, where the plate lies ahead within the band
            part = masks[:, :, k] & dips[:, :, k + 1:i + w].any(axis=2) \
                & ~dips[:, :, i:k + 1].any(axis=2)
            full = np.zeros_like(anchor)
            full[crop.sl] = part
            keep.append(full)
    return Bands(starts, w, keep)
