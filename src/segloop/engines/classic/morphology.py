"""2D morphology for the classic engine: disks, openings, components, crops (sizes in mm).

Every function works on ``(X, Y)`` bool slices with in-plane spacing ``sp`` (mm). Must not import
the rest of the classic engine, torch, FastAPI, Celery or the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from segloop.engines.classic.intensity import F32
from segloop.types import BoolArray

__all__ = [
    "Crop", "ball", "bbox", "box_cover", "clean", "component_medians", "dilate1", "disk",
    "fill_holes", "follow",
    "inner", "keep_components", "largest", "open_disk", "signed_distance",
]


def disk(shape: tuple[int, int], x: int, y: int, r_mm: float, sp: tuple[float, float]) -> BoolArray:
    """Voxels of a ``(X, Y)`` grid within ``r_mm`` of (x, y) (at least the voxel itself)."""
    xx = (np.arange(shape[0]) - x)[:, None] * sp[0]
    yy = (np.arange(shape[1]) - y)[None, :] * sp[1]
    d = xx**2 + yy**2 <= r_mm**2
    d[x, y] = True
    return np.asarray(d, dtype=bool)


def ball(r_mm: float, sp: tuple[float, float]) -> BoolArray:
    """A 2D structuring element of radius ``r_mm`` (at least the 3x3 cross)."""
    rx = max(1, round(r_mm / sp[0]))
    ry = max(1, round(r_mm / sp[1]))
    xx = np.arange(-rx, rx + 1)[:, None] * sp[0]
    yy = np.arange(-ry, ry + 1)[None, :] * sp[1]
    se = xx**2 + yy**2 <= max(r_mm, min(sp)) ** 2 + 1e-6
    return np.asarray(se, dtype=bool)


def signed_distance(mask: BoolArray, sp: tuple[float, float], cap: float) -> F32:
    """Signed distance in mm to the border of ``mask``: positive inside, negative outside."""
    if not mask.any():
        return np.full(mask.shape, -cap, dtype=np.float32)
    if mask.all():
        return np.full(mask.shape, cap, dtype=np.float32)
    # the inside distances on the mask's box plus a voxel: the nearest outside voxel of a
    # voxel in the box, clamped to that frame, is a voxel of its rim, never farther
    bb = bbox(mask)
    assert bb is not None
    crop = Crop.around(bb, 1, 1, *mask.shape)
    inside = np.zeros(mask.shape, dtype=np.float64)
    inside[crop.sl] = ndi.distance_transform_edt(mask[crop.sl], sampling=sp)
    outside = ndi.distance_transform_edt(~mask, sampling=sp)
    return np.asarray(np.clip(inside - outside, -cap, cap), dtype=np.float32)


def bbox(mask: BoolArray) -> tuple[int, int, int, int] | None:
    xs = np.flatnonzero(mask.any(axis=1))
    if xs.size == 0:
        return None
    ys = np.flatnonzero(mask.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1]), int(ys[-1])


def inner(mask: BoolArray, min_count: int = 8) -> BoolArray:
    """``mask`` without its one-voxel border (partial-volume voxels), unless too few remain."""
    er = ndi.binary_erosion(mask)
    return np.asarray(er if er.sum() >= min_count else mask, dtype=bool)


def dilate1(mask: BoolArray) -> BoolArray:
    """``mask`` dilated by one voxel (8-neighbourhood), computed on its bounding box."""
    out = np.zeros(mask.shape, dtype=bool)
    bb = bbox(mask)
    if bb is None:
        return out
    crop = Crop.around(bb, 2, 2, *mask.shape)
    out[crop.sl] = ndi.binary_dilation(mask[crop.sl], np.ones((3, 3), bool))
    return out


def keep_components(fg: BoolArray, seeds: BoolArray, min_overlap: int = 1) -> BoolArray:
    """The connected components (8-connectivity) of ``fg`` that overlap ``seeds``."""
    lab, n = ndi.label(fg, structure=np.ones((3, 3), bool))
    if n == 0:
        return fg
    hits = np.bincount(lab[seeds & fg], minlength=n + 1)
    keep = hits >= min_overlap
    keep[0] = False
    return np.asarray(keep[lab], dtype=bool)


def follow(fg: BoolArray, core: BoolArray, prev: BoolArray, min_frac: float) -> BoolArray:
    """Components of ``fg`` that continue ``prev``: the one overlapping it most, plus others
    that touch ``core`` and lie mostly (``min_frac`` of their area) inside ``prev``."""
    lab, n = ndi.label(fg, structure=np.ones((3, 3), bool))
    if n == 0:
        return fg
    area = np.bincount(lab.ravel(), minlength=n + 1)
    inprev = np.bincount(lab[prev], minlength=n + 1)
    incore = np.bincount(lab[core], minlength=n + 1)
    inprev[0] = incore[0] = 0
    keep = (incore > 0) & (inprev >= min_frac * np.maximum(area, 1))
    if inprev.max() > 0:
        keep[int(np.argmax(inprev))] = True
    keep[0] = False
    return np.asarray(keep[lab], dtype=bool)


def component_medians(img: F32, lab: npt.NDArray[np.int32]) -> F32:
    """The median of ``img`` over each component of the labelling ``lab`` (labels 1..n), as
    ``ndi.median(img, lab, index=1..n)`` gives it, from each component's own box."""
    return np.asarray([np.median(img[sl][lab[sl] == i]) for i, sl in
                       enumerate(ndi.find_objects(lab), start=1) if sl is not None],
                      dtype=img.dtype)


def largest(fg: BoolArray, rel: float = 0.0) -> BoolArray:
    """The largest component of ``fg`` plus any others at least ``rel`` times as large."""
    lab, n = ndi.label(fg, structure=np.ones((3, 3), bool))
    if n <= 1:
        return fg
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    keep = sizes >= max(1, rel * sizes.max()) if rel > 0 else sizes == sizes.max()
    keep[0] = False
    return np.asarray(keep[lab], dtype=bool)


def open_disk(fg: BoolArray, sp: tuple[float, float], r_mm: float) -> BoolArray:
    """Morphological opening by a disk of ``r_mm`` (via distance transforms for large radii)."""
    if r_mm < 2.5 * max(sp):
        return np.asarray(ndi.binary_opening(fg, structure=ball(r_mm, sp)), dtype=bool)
    bb = bbox(fg)
    if bb is None:
        return np.zeros_like(fg)
    # on the mask's box with a ring of background (the slice's edge is background too): the
    # erosion's nearest background voxel and the dilation's nearest eroded voxel of a voxel
    # of the box both lie in that frame, so the distances are those of the whole slice
    box = (slice(bb[0], bb[2] + 1), slice(bb[1], bb[3] + 1))
    f = np.pad(fg[box], 1)
    eroded = ndi.distance_transform_edt(f, sampling=sp) > r_mm
    if not eroded.any():
        return np.zeros_like(fg)
    opened = ndi.distance_transform_edt(~eroded, sampling=sp) <= r_mm
    out = np.zeros_like(fg)
    out[box] = opened[1:-1, 1:-1] & fg[box]
    return np.asarray(out, dtype=bool)


def clean(fg: BoolArray, sp: tuple[float, float], r_mm: float, open_mm: float | None = None) -> BoolArray:
    """Open (radius ``open_mm``, default ``r_mm``) then close (``r_mm``) with disks, fill holes.

    Radii below 0.75 voxel are skipped. An opening that would empty the mask is not applied.
    """
    ro = r_mm if open_mm is None else max(open_mm, r_mm)
    if ro >= 0.75 * min(sp):
        opened = open_disk(fg, sp, ro)
        if opened.any():
            fg = opened
    if r_mm >= 0.75 * min(sp):
        se = ball(r_mm, sp)
        fg = ndi.binary_closing(np.pad(fg, se.shape[0]), structure=se)[
            se.shape[0]:-se.shape[0], se.shape[0]:-se.shape[0]]
    return fill_holes(fg)


def fill_holes(fg: BoolArray) -> BoolArray:
    """``fg`` with its holes filled: the background's 4-connected components that do not
    reach the slice's edge (``ndi.binary_fill_holes``'s result, by one labelling instead of
    its iterated propagation from the edge)."""
    lab, n = ndi.label(~fg)
    if n == 0:
        return np.asarray(fg, dtype=bool)
    edge = np.zeros(n + 1, dtype=bool)
    for border in (lab[0, :], lab[-1, :], lab[:, 0], lab[:, -1]):
        edge[border] = True
    hole = ~edge
    hole[0] = False
    return np.asarray(fg | hole[lab], dtype=bool)


def box_cover(fg: BoolArray, inbox: BoolArray) -> float:
    """How far ``fg`` spans the box ``inbox``: the smaller of its extents along x and y as a
    fraction of the box's (1 for a target touching all four sides)."""
    bf, bb = bbox(fg), bbox(inbox)
    if bf is None or bb is None:
        return 0.0
    return min((bf[2] - bf[0] + 1) / (bb[2] - bb[0] + 1), (bf[3] - bf[1] + 1) / (bb[3] - bb[1] + 1))


@dataclass(frozen=True)
class Crop:
    """A window ``[x0:x1, y0:y1]`` of a slice."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def sl(self) -> tuple[slice, slice]:
        return slice(self.x0, self.x1), slice(self.y0, self.y1)

    @staticmethod
    def around(bb: tuple[int, int, int, int], mx: int, my: int, nx: int, ny: int) -> Crop:
        return Crop(max(0, bb[0] - mx), max(0, bb[1] - my), min(nx, bb[2] + mx + 1),
                     min(ny, bb[3] + my + 1))
