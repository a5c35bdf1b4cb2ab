"""Boundary support: does the tracked mask's contour still lie on an intensity edge?

The user drew the box around something visible, so on the key slice most of the target's
contour is an intensity edge of one polarity (the inside darker, or brighter, than just
outside). When tracking has slid past the target's end into tissue of the same intensity,
or onto a neighbour through a gap, the mask's contour is held by the growth window and the
area cap instead of by an edge: only a small share of it still shows the key slice's
contrast across it. ``SupportWatch`` measures, per tracked slice, the share of the inner
contour whose contrast across the contour (sampled along the mask's normal, 1.5 voxels each
side) has the key slice's polarity and at least half the key slice's median strength,
relative to the same share on the key slice; where that ratio stays under ``support_min``
for ``support_run`` slices in a row, the target ended at the first of them (see the
thirteenth pass (c19grey) in ``benchmarks/devset.md``).

Must not import the classic engine's session module, torch, FastAPI, Celery or the CLI.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from segloop.engines.classic.morphology import bbox
from segloop.types import BoolArray

__all__ = ["SupportWatch", "anchor_contrast", "contour_contrast"]

F64 = npt.NDArray[np.float64]

_MARGIN = 10  # crop margin (voxels) around the mask: the filters and samples reach 5
_STEP = 1.5  # voxels either side of the contour where the contrast is sampled
_SMOOTH = 0.7  # in-plane Gaussian sigma (voxels) of the image before sampling
_MIN_POINTS = 8  # fewer contour points: no measure


def _crop(img: npt.NDArray[np.floating], mask: BoolArray) -> tuple[BoolArray, F64] | None:
    """The mask and the smoothed image, cropped around the mask; None when the mask is empty
    or fills its crop (no outside to compare with)."""
    box = bbox(mask)
    if box is None:
        return None
    x0, y0 = max(box[0] - _MARGIN, 0), max(box[1] - _MARGIN, 0)
    x1, y1 = min(box[2] + _MARGIN + 1, mask.shape[0]), min(box[3] + _MARGIN + 1, mask.shape[1])
    m = mask[x0:x1, y0:y1]
    if m.all():
        return None
    im = ndi.gaussian_filter(np.asarray(img[x0:x1, y0:y1], dtype=np.float64), _SMOOTH)
    return m, im


def _across(m: BoolArray, im: F64) -> F64 | None:
    """The contrast across the cropped mask's inner contour, point by point (inside minus
    outside, sampled along the normal of the smoothed mask); None with too few points."""
    contour = m & ~ndi.binary_erosion(m)
    pts = np.argwhere(contour)
    if len(pts) < _MIN_POINTS:
        return None
    sm = ndi.gaussian_filter(m.astype(np.float64), 1.0)
    nx, ny = ndi.sobel(sm, 0)[contour], ndi.sobel(sm, 1)[contour]
    norm = np.hypot(nx, ny) + 1e-9
    ux, uy = _STEP * nx / norm, _STEP * ny / norm  # points inwards (up the mask's gradient)
    a = ndi.map_coordinates(im, [pts[:, 0] + ux, pts[:, 1] + uy], order=1, mode="nearest")
    b = ndi.map_coordinates(im, [pts[:, 0] - ux, pts[:, 1] - uy], order=1, mode="nearest")
    return np.asarray(a - b, dtype=np.float64)


def contour_contrast(img: npt.NDArray[np.floating], mask: BoolArray) -> F64 | None:
    """The contrast across the mask's inner contour, point by point (what each tracked slice
    is measured by); None when the mask is empty, fills its slice or has too few contour
    points."""
    got = _crop(img, mask)
    return None if got is None else _across(*got)


def anchor_contrast(img: npt.NDArray[np.floating], mask: BoolArray) -> tuple[F64, float] | None:
    """The anchor's ``contour_contrast`` and its band contrast (the mean of the mask's
    two-voxel inner band minus that of the two-voxel ring outside), whose sign is the
    polarity the tracked slices are read with; None as ``contour_contrast``."""
    got = _crop(img, mask)
    if got is None:
        return None
    m, im = got
    loc = _across(m, im)
    if loc is None:
        return None
    band_in = m & ~ndi.binary_erosion(m, iterations=2)
    band_out = ndi.binary_dilation(m, iterations=2) & ~m
    inside = im[band_in].mean() if band_in.any() else im[m].mean()
    return loc, float(inside - im[band_out].mean())


class SupportWatch:
    """Per direction of a propagation: reads the anchor slice's contour once, then each
    tracked slice's; ``step`` answers how many of the latest slices are unsupported in a row,
    and ``ended`` whether that run has reached ``run`` slices (the target ended at its first).
    An anchor without a measurable edge disables the watch (``active`` False)."""

    def __init__(self, img: npt.NDArray[np.floating], anchor: BoolArray, least: float,
                 run: int) -> None:
        self.least, self.run = least, max(1, run)
        self.count = 0
        self.active = False
        self.sign, self.thr, self.share = 1.0, 0.0, 0.0
        got = anchor_contrast(img, anchor)
        if got is None:
            return
        loc, band = got
        self.sign = 1.0 if band >= 0 else -1.0
        self.thr = 0.5 * abs(float(np.median(loc * self.sign)))
        self.share = float(np.mean(loc * self.sign > self.thr))
        self.active = self.share > 0 and self.thr > 0

    def support(self, img: npt.NDArray[np.floating], mask: BoolArray) -> float | None:
        """The slice's supported share of contour relative to the anchor's (None: no measure)."""
        loc = contour_contrast(img, mask)
        if loc is None:
            return None
        return float(np.mean(loc * self.sign > self.thr)) / self.share

    def step(self, img: npt.NDArray[np.floating], mask: BoolArray) -> int:
        """Read the next tracked slice; the number of unsupported slices in a row, ending here
        (a slice without a measure breaks the run)."""
        if not self.active:
            return 0
        s = self.support(img, mask)
        self.count = self.count + 1 if s is not None and s < self.least else 0
        return self.count

    @property
    def ended(self) -> bool:
        """Whether the unsupported run is long enough to end the target at its first slice."""
        return self.active and self.count >= self.run
