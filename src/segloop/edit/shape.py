"""Smoothing one object and filling it between sparse slices.

:func:`smooth` is a Gaussian of the object's binary mask thresholded at one half (close to a
median filter, as Slicer's default smoothing): bumps and notches smaller than the kernel go,
the volume stays about the same. :func:`fill_between` is shape-based interpolation: on every
run of empty axial slices between two drawn slices, the signed distance maps of the two are
blended linearly (as Slicer's "fill between slices" and ITK-SNAP's interpolation do), each
first moved along the line between the two shapes' centroids, so a structure drawn at another
place on the next slice (a tilted vessel, two strokes that do not overlap) is carried across
the gap instead of vanishing in it.
Neither writes over another object. Must not import jobs, api, engines, torch or the web UI.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from segloop.errors import InputError

from .regions import Labels, _check

__all__ = ["fill_between", "smooth"]


def _bbox(m: npt.NDArray[np.bool_], pad: Sequence[int]) -> tuple[slice, ...]:
    idx = np.nonzero(m)
    return tuple(slice(max(0, int(i.min()) - p), min(n, int(i.max()) + p + 1))
                 for i, p, n in zip(idx, pad, m.shape, strict=True))


def smooth(labels: Labels, label: int, spacing: Sequence[float], kernel_mm: float
           ) -> tuple[Labels, int]:
    """``labels`` with ``label`` smoothed by a kernel of ``kernel_mm`` (its full width, in
    mm; ``spacing``: voxel size in mm per axis); returns the new map and voxels changed."""
    _check(labels, label)
    if not 0 < kernel_mm <= 100:
        raise InputError(f"the smoothing kernel must be 0..100 mm, got {kernel_mm}")
    m = labels == label
    if not m.any():
        return labels.copy(), 0
    sigma = [kernel_mm / 4.0 / max(float(s), 1e-6) for s in spacing]  # FWHM ~ 2.4 sigma
    pad = [int(np.ceil(3 * s)) + 1 for s in sigma]
    box = _bbox(m, pad)
    sub = m[box]
    blurred = ndimage.gaussian_filter(sub.astype(np.float32), sigma=sigma, mode="constant")
    new = blurred > 0.5
    out = labels.copy()
    part = out[box]
    free = (part == 0) | (part == label)
    changed = int(((new & free) != sub).sum())
    part[sub & ~new] = 0
    part[new & free] = label
    return out, changed


def _signed_distance(m: npt.NDArray[np.bool_], sampling: Sequence[float]
                     ) -> npt.NDArray[np.float64]:
    """Positive inside, negative outside (mm)."""
    inside = ndimage.distance_transform_edt(m, sampling=sampling)
    outside = ndimage.distance_transform_edt(~m, sampling=sampling)
    return np.asarray(inside, np.float64) - np.asarray(outside, np.float64)


def fill_between(labels: Labels, label: int, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                 first: int | None = None, last: int | None = None) -> tuple[Labels, int]:
    """``labels`` with ``label`` interpolated on the empty axial slices between its drawn ones
    (within ``first..last`` when given); returns the new map and the voxels added. InputError
    when fewer than two slices hold the object."""
    _check(labels, label)
    m = labels == label
    zs = np.flatnonzero(m.any(axis=(0, 1)))
    if first is not None:
        zs = zs[zs >= first]
    if last is not None:
        zs = zs[zs <= last]
    if len(zs) < 2:
        raise InputError("fill between slices needs the object on at least two axial slices")
    out = labels.copy()
    added = 0
    for a, b in itertools.pairwise(int(z) for z in zs):
        if b - a < 2:
            continue
        ca = np.argwhere(m[:, :, a]).mean(axis=0)
        d = np.argwhere(m[:, :, b]).mean(axis=0) - ca  # centroid of b - centroid of a (voxels)
        pad = 2 + int(np.ceil(np.abs(d).max()))
        bx, by = _bbox(m[:, :, a] | m[:, :, b], (pad, pad))
        da = _signed_distance(m[bx, by, a], spacing[:2])
        db = _signed_distance(m[bx, by, b], spacing[:2])
        for z in range(a + 1, b):
            t = (z - a) / (b - a)
            # both shapes moved to the centroid of slice z, then blended
            sa = ndimage.shift(da, t * d, order=1, mode="nearest")
            sb = ndimage.shift(db, (t - 1) * d, order=1, mode="nearest")
            inside = (1 - t) * sa + t * sb > 0
            part = out[bx, by, z]
            put = inside & (part == 0)
            part[put] = label
            added += int(put.sum())
    return out, added
