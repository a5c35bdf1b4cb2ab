"""SAM-Med3D's input pipeline on segloop's canonical grid: 1.5 mm patches in, masks back out.

The official inference (``utils/infer_utils.py``) resamples the whole volume to 1.5 mm with
torchio (a grid centred on the old one, ``floor(n * s / 1.5)`` voxels per axis, trilinear),
turns it to canonical RAS, crops or pads 128³ around the target, z-normalises with the mean
and (unbiased) standard deviation of the voxels > 0 of that patch, and finally resamples the
patch's mask back with nearest neighbour. :class:`PatchGrid` does the same arithmetic but
only ever samples the 128³ voxels of one patch from the canonical volume (never the whole
resampled volume), and maps prompts and masks between the two grids.

Axes: everything is in canonical ``(x, y, z)`` order; the patch's array axes are the same
axes at the target spacing. Pure numpy: must not import torch, the CLI, FastAPI or Celery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["PatchGrid", "znormalise"]

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class PatchGrid:
    """One ``size``³ patch of the volume resampled to ``target`` mm.

    shape / spacing: the canonical volume's ``(X, Y, Z)`` and voxel size in mm.
    start: the patch's first voxel in resampled-grid indices (may be negative: padding).
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    target: float
    size: int
    start: tuple[int, int, int]

    @property
    def resampled_shape(self) -> tuple[int, int, int]:
        """Voxels per axis of the resampled grid (torchio's ``floor(n * s / target)``)."""
        out = [int(np.floor(n * s / self.target)) if n > 1 else 1
               for n, s in zip(self.shape, self.spacing, strict=True)]
        return (max(out[0], 1), max(out[1], 1), max(out[2], 1))

    def _ratio(self) -> npt.NDArray[np.float64]:
        return self.target / np.asarray(self.spacing, dtype=np.float64)

    def to_resampled(self, ijk: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Canonical voxel indices ``(..., 3)`` -> continuous resampled-grid indices."""
        n = np.asarray(self.shape, np.float64)
        m = np.asarray(self.resampled_shape, np.float64)
        return (np.asarray(ijk, np.float64) - (n - 1) / 2) / self._ratio() + (m - 1) / 2

    def to_canonical(self, r: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Continuous resampled-grid indices ``(..., 3)`` -> continuous canonical indices."""
        n = np.asarray(self.shape, np.float64)
        m = np.asarray(self.resampled_shape, np.float64)
        return (np.asarray(r, np.float64) - (m - 1) / 2) * self._ratio() + (n - 1) / 2

    @classmethod
    def around(cls, shape: tuple[int, int, int], spacing: tuple[float, float, float],
               centre_canonical: npt.ArrayLike, target: float = 1.5, size: int = 128) -> PatchGrid:
        """The patch whose voxel ``size // 2`` holds ``centre_canonical`` (canonical indices)."""
        g = cls(shape, spacing, target, size, (0, 0, 0))
        c = np.floor(g.to_resampled(centre_canonical) + 0.5).astype(int)
        s = c - size // 2
        return cls(shape, spacing, target, size, (int(s[0]), int(s[1]), int(s[2])))

    @classmethod
    def around_resampled(cls, shape: tuple[int, int, int], spacing: tuple[float, float, float],
                         bb_min: npt.ArrayLike, bb_max: npt.ArrayLike, target: float = 1.5,
                         size: int = 128) -> PatchGrid:
        """torchio ``CropOrPad(mask_name=...)``'s patch around a resampled-grid bounding box.

        ``bb_min`` inclusive, ``bb_max`` exclusive (the official inference centres on the label).
        """
        centre = (np.asarray(bb_min, np.float64) + np.asarray(bb_max, np.float64)) / 2
        shift = np.where((centre % 1 != 0) ^ (size % 2 != 0), 0.5, 0.0)  # torchio's rounding
        s = (centre - shift - size / 2).astype(int)
        return cls(shape, spacing, target, size, (int(s[0]), int(s[1]), int(s[2])))

    def patch_points(self, ijk: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Canonical voxel indices ``(N, 3)`` -> integer patch voxel indices (nearest)."""
        r = np.floor(self.to_resampled(ijk) + 0.5).astype(np.int64)
        return r - np.asarray(self.start, np.int64)

    def contains(self, ijk: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Which canonical points ``(N, 3)`` fall inside the patch."""
        p = self.patch_points(ijk)
        inside: npt.NDArray[np.bool_] = np.all((p >= 0) & (p < self.size), axis=-1)
        return inside

    def sample(self, canonical: npt.NDArray[np.generic]) -> F32:
        """The patch ``(size, size, size)`` float32, trilinear, 0 outside (padding).

        As SimpleITK's linear resampler: points within half a voxel of the border take the
        border voxel's value, points farther out are 0; an integer-typed volume (CT stored as
        int16) is resampled in its own type as the official pipeline does (torchio keeps the
        file's dtype): the interpolated values are truncated toward zero.
        """
        src = np.asarray(canonical)
        integer = np.issubdtype(src.dtype, np.integer)
        out: npt.NDArray[Any] = src.astype(np.float64 if integer else np.float32)
        for axis in range(3):
            n = self.shape[axis]
            j = self.start[axis] + np.arange(self.size)
            inside = (j >= 0) & (j < self.resampled_shape[axis])
            c = self.to_canonical_axis(axis, j)
            inside &= (c >= -0.5) & (c < n - 0.5)
            i0 = np.floor(c).astype(np.int64)
            w = (c - i0).astype(out.dtype)
            a = np.take(out, np.clip(i0, 0, n - 1), axis=axis)
            b = np.take(out, np.clip(i0 + 1, 0, n - 1), axis=axis)
            shape = [1, 1, 1]
            shape[axis] = self.size
            wr = w.reshape(shape)
            out = ((1 - wr) * a + wr * b) * inside.reshape(shape)
        if integer:
            out = np.trunc(out)
        return np.ascontiguousarray(out, dtype=np.float32)

    def to_canonical_axis(self, axis: int, j: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """Resampled indices ``j`` along one axis -> continuous canonical indices."""
        n, m = self.shape[axis], self.resampled_shape[axis]
        ratio = self.target / self.spacing[axis]
        return (j.astype(np.float64) - (m - 1) / 2) * ratio + (n - 1) / 2

    def canonical_index(self, axis: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Canonical voxels along ``axis`` covered by the patch and their nearest patch index."""
        n, m = self.shape[axis], self.resampled_shape[axis]
        i = np.arange(n)
        r = (i - (n - 1) / 2) * (self.spacing[axis] / self.target) + (m - 1) / 2
        p = np.floor(r + 0.5).astype(np.int64) - self.start[axis]
        keep = (p >= 0) & (p < self.size)
        return i[keep], p[keep]

    def paste(self, patch: npt.NDArray[np.generic], out: npt.NDArray[np.generic]) -> None:
        """Write a ``(size,)*3`` patch array onto canonical ``out`` (nearest neighbour), in place."""
        (ix, px), (iy, py), (iz, pz) = (self.canonical_index(a) for a in range(3))
        if ix.size and iy.size and iz.size:
            out[np.ix_(ix, iy, iz)] = patch[np.ix_(px, py, pz)]

    def covered(self) -> tuple[slice, slice, slice] | None:
        """The canonical bounding box the patch covers, or None when it covers nothing."""
        sl = []
        for a in range(3):
            i, _ = self.canonical_index(a)
            if not i.size:
                return None
            sl.append(slice(int(i[0]), int(i[-1]) + 1))
        return (sl[0], sl[1], sl[2])


def znormalise(patch: F32) -> F32:
    """Subtract the mean and divide by the unbiased std of the voxels > 0 (torchio's ZNormalization
    with ``masking_method=lambda x: x > 0``, as the official inference); unchanged std of 1 when
    fewer than two voxels are > 0 or they are constant."""
    vals = patch[patch > 0].astype(np.float64)
    if vals.size < 2:
        return patch.astype(np.float32)
    mean, std = float(vals.mean()), float(vals.std(ddof=1))
    return ((patch - mean) / (std if std > 0 else 1.0)).astype(np.float32)
