"""The classic engine's intensity model: foreground/background densities and the noise level.

Densities are kernel-smoothed histograms on a fixed binning; the per-voxel evidence is their
log-likelihood ratio. Must not import the rest of the classic engine, torch, FastAPI, Celery or
the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

__all__ = ["F32", "F64", "IntensityModel", "density", "fit_model", "noise_sigma"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

_NBINS = 128
_LR_CLIP = 6.0


@dataclass
class IntensityModel:
    """Foreground/background intensity densities on a fixed binning.

    lo/hi: the intensity range binned (values outside are clipped); fg/bg: ``(_NBINS,)``
    probability densities (sum 1, strictly positive).
    """

    lo: float
    hi: float
    fg: F64
    bg: F64

    def log_ratio(self, values: npt.NDArray[np.floating]) -> F32:
        """Log-likelihood ratio log p_fg / p_bg of each value, clipped to +-_LR_CLIP."""
        idx = self._index(values)
        lr = np.log(self.fg) - np.log(self.bg)
        return np.asarray(np.clip(lr[idx], -_LR_CLIP, _LR_CLIP), dtype=np.float32)

    def overlap(self, other: F64) -> float:
        """Bhattacharyya coefficient of the foreground density and ``other`` (same binning):
        1 for equal densities, 0 for disjoint ones."""
        return float(np.sum(np.sqrt(self.fg * other)))

    def log_ratio_to_fg(self, other: F64, values: npt.NDArray[np.floating]) -> F32:
        """Log-likelihood ratio log p_other / p_fg of each value (``other`` on this binning)."""
        lr = np.log(other) - np.log(self.fg)
        return np.asarray(lr[self._index(values)], dtype=np.float32)

    def _index(self, values: npt.NDArray[np.floating]) -> npt.NDArray[np.intp]:
        scale = (_NBINS - 1) / max(self.hi - self.lo, 1e-6)
        return np.asarray(np.clip(np.rint((values - self.lo) * scale), 0, _NBINS - 1), dtype=np.intp)

    def density(self, vals: npt.NDArray[np.floating], noise: float) -> F64:
        """A smoothed density of ``vals`` on this model's binning (kernel width >= noise)."""
        return density(vals, self.lo, self.hi, noise)

    def blend(self, other: IntensityModel, w: float) -> IntensityModel:
        """``(1 - w) * self + w * other`` (same binning)."""
        return IntensityModel(self.lo, self.hi, (1 - w) * self.fg + w * other.fg,
                              (1 - w) * self.bg + w * other.bg)


def density(vals: npt.NDArray[np.floating], lo: float, hi: float, noise: float) -> F64:
    """Histogram of ``vals`` on ``_NBINS`` bins over [lo, hi], smoothed by a Gaussian kernel.

    The kernel is Silverman's bandwidth, at least ``noise`` (intensity units) and one bin.
    """
    v = np.asarray(vals, dtype=np.float64).ravel()
    binw = max(hi - lo, 1e-6) / (_NBINS - 1)
    if v.size == 0:
        return np.full(_NBINS, 1.0 / _NBINS)
    idx = np.clip(np.rint((v - lo) / binw), 0, _NBINS - 1).astype(np.intp)
    h = np.bincount(idx, minlength=_NBINS).astype(np.float64)
    q75, q25 = np.percentile(v, [75, 25])
    spread = min(float(v.std()), float(q75 - q25) / 1.34) if q75 > q25 else float(v.std())
    bw = 0.9 * spread * v.size ** -0.2
    sigma_bins = max(bw, noise * 0.5, binw) / binw
    h = ndi.gaussian_filter1d(h, sigma_bins, mode="constant")
    h = np.asarray(h, dtype=np.float64) / max(float(h.sum()), 1e-12)
    return np.asarray(h + 1e-4 / _NBINS, dtype=np.float64)


def fit_model(fg: npt.NDArray[np.floating], bg: npt.NDArray[np.floating], lo: float, hi: float,
              noise: float) -> IntensityModel:
    """The model of foreground values ``fg`` against background values ``bg`` on [lo, hi]."""
    return IntensityModel(lo, hi, density(fg, lo, hi, noise), density(bg, lo, hi, noise))


def noise_sigma(a: npt.NDArray[np.floating]) -> float:
    """Robust white-noise sigma of an image (axes 0, 1 in-plane): MAD of a Laplacian residual,
    ignoring perfectly flat areas (padding, clipped air) that carry no noise."""
    a = np.asarray(a, dtype=np.float32)
    if a.shape[0] < 3 or a.shape[1] < 3:
        return 0.0
    res = a[1:-1, 1:-1] - 0.25 * (a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:])
    res = res[res != 0]
    if res.size == 0:
        return 0.0
    mad = float(np.median(np.abs(res - np.median(res))))
    return mad * 1.4826 / float(np.sqrt(1.25))
