"""What every step of the classic engine reads: the canonical image, its spacing, the options,
and each object's learned intensity model, size and denoising sigma.

Must not import the classic engine's segmentation, propagation or session modules, torch,
FastAPI, Celery or the CLI.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from segloop.engines.classic.intensity import F32, IntensityModel, fit_model, noise_sigma
from segloop.engines.classic.morphology import Crop, ball, bbox, inner
from segloop.engines.classic.options import ClassicOptions
from segloop.types import BoolArray

__all__ = ["ClassicContext"]


class ClassicContext:
    """The image ``(X, Y, Z)`` float32 on the canonical grid, in-plane spacing ``sp`` and slice
    spacing ``sz`` (mm), the options, whether it is a 2D picture's one-slice volume
    (``picture``), and per object: ``models`` (its intensity model), ``scale`` (its
    equivalent radius on its key slice, mm), ``sigma_mm`` (its denoising sigma), ``support``
    (the intensity range of its key slice, see :meth:`set_support`), ``jump_cut`` (the
    slices where a propagation ended it at a jump, ``ends.JumpWatch``) and ``sheet_cut``
    (those a propagation emptied past a dark sheet, ``sheets.sheet_bands``), ``sheet_bands``
    (the slices of every dark sheet's band that propagation's run-on crossed)."""

    def __init__(self, img: F32, spacing: tuple[float, float, float], opts: ClassicOptions) -> None:
        self.img = img
        self.shape: tuple[int, int, int] = (int(img.shape[0]), int(img.shape[1]), int(img.shape[2]))
        self.sp = (float(spacing[0]), float(spacing[1]))
        self.sz = float(spacing[2])
        self.opts = opts
        self.picture = False  # a 2D picture's one-slice volume (set by the session)
        self.models: dict[int, IntensityModel] = {}
        self.scale: dict[int, float] = {}
        self.sigma_mm: dict[int, float] = {}
        self.support: dict[int, tuple[float, float]] = {}
        self.typical: dict[int, tuple[float, float]] = {}
        self.pad_in_target: set[int] = set()
        self.jump_cut: dict[int, set[int]] = {}
        self.sheet_cut: dict[int, set[int]] = {}
        self.sheet_bands: dict[int, set[int]] = {}
        #: the values are Hounsfield units (a CT volume holding air; set by the session)
        self.hu = False
        self._noise: float | None = None
        self._pad_value: float | None = None
        self._pad_checked = False

    # ----------------------------------------------------------------- images

    def noise_level(self) -> float:
        """Robust noise sigma of the volume (on up to 4 slices), intensity units."""
        if self._noise is None:
            nz = self.img.shape[2]
            zs = np.unique(np.linspace(0, nz - 1, min(nz, 4)).round().astype(int))
            self._noise = max(noise_sigma(self.img[:, :, zs]), 1e-3)
        return self._noise

    def padding_value(self) -> float | None:
        """The volume's padding value, if it has one: its minimum, when at least 5 % of the
        voxels hold exactly it (the zero outside a skull-stripped brain, a scanner's fill
        value outside the field of view). Such voxels are no tissue."""
        if not self._pad_checked:
            self._pad_checked = True
            step = max(1, int(np.ceil((self.img.size / 2e6) ** (1 / 3))))
            sub = self.img[::step, ::step, ::step]
            lo = float(sub.min())
            if float(np.mean(sub == lo)) >= 0.05:
                self._pad_value = lo
        return self._pad_value

    def padding(self, z: int, crop: Crop, object_id: int) -> BoolArray:
        """Padding voxels of slice z within ``crop`` (none when the volume has no padding,
        or when the object's key slice showed the padding value inside the target)."""
        pad = self.padding_value()
        raw = self.img[crop.x0:crop.x1, crop.y0:crop.y1, z]
        if pad is None or object_id in self.pad_in_target:
            return np.zeros(raw.shape, dtype=bool)
        return np.asarray(raw == pad, dtype=bool)

    def smoothed(self, z: int, crop: Crop, object_id: int | None = None) -> F32:
        """Slice z within ``crop``, denoised by a Gaussian (sigma in mm chosen per object from
        its contrast-to-noise ratio, at most ``smooth_mm``; between 0.5 and 2 voxels)."""
        smooth_mm = self.opts.smooth_mm
        sigma_mm = self.sigma_mm.get(object_id, smooth_mm) if object_id is not None else smooth_mm
        sig = [min(2.0, max(0.5, sigma_mm / s)) for s in self.sp]
        pad = 3 * int(np.ceil(max(sig)))
        nx, ny = self.shape[:2]
        big = Crop(max(0, crop.x0 - pad), max(0, crop.y0 - pad), min(nx, crop.x1 + pad),
                   min(ny, crop.y1 + pad))
        a = ndi.gaussian_filter(self.img[big.x0:big.x1, big.y0:big.y1, z], sig, mode="nearest")
        ox, oy = crop.x0 - big.x0, crop.y0 - big.y0
        return np.asarray(a[ox:ox + crop.x1 - crop.x0, oy:oy + crop.y1 - crop.y0], dtype=np.float32)

    def margin(self, mm: float) -> tuple[int, int]:
        """Voxels along x and y that cover ``mm``, plus two."""
        return (int(np.ceil(mm / self.sp[0])) + 2, int(np.ceil(mm / self.sp[1])) + 2)

    def grow_mm(self) -> float:
        """How far (mm) the target may grow from one slice to the next."""
        return max(self.opts.grow_mm * self.sz, 1.5 * max(self.sp))

    def near(self, mask: BoolArray, r_mm: float) -> BoolArray:
        """Voxels of the slice within ``r_mm`` of ``mask`` (computed on a crop around it)."""
        out = np.zeros(mask.shape, dtype=bool)
        bb = bbox(mask)
        if bb is None:
            return out
        mx, my = self.margin(r_mm)
        crop = Crop.around(bb, mx, my, *mask.shape)
        d = ndi.distance_transform_edt(~mask[crop.sl], sampling=self.sp)
        out[crop.sl] = d <= r_mm
        return out

    def distance_to(self, mask: BoolArray, x: int, y: int, cap: float) -> float:
        """Distance (mm) from voxel (x, y) to the nearest voxel of ``mask``, at most ``cap``."""
        mx, my = self.margin(cap)
        crop = Crop.around((x, y, x, y), mx, my, *mask.shape)
        pts = np.argwhere(mask[crop.sl])
        if pts.size == 0:
            return cap
        dx = (pts[:, 0] + crop.x0 - x) * self.sp[0]
        dy = (pts[:, 1] + crop.y0 - y) * self.sp[1]
        return float(min(cap, np.sqrt(dx**2 + dy**2).min()))

    # ----------------------------------------------------------------- models

    def set_sigma(self, object_id: int, raw: npt.NDArray[np.floating], fg: BoolArray,
                  bg: BoolArray, scale_mm: float) -> None:
        """Choose the object's denoising sigma from its contrast-to-noise ratio.

        A Gaussian of sigma s voxels divides white noise by about ``2 sqrt(pi) s``; the sigma
        is the smallest that leaves the noise below a sixth of the target/background contrast
        (between 0.5 voxel and ``smooth_mm``), so sharp targets keep sharp edges; but at least
        ``smooth_frac`` of the target's radius ``scale_mm`` (details much smaller than the
        target are noise at its scale).
        """
        if not fg.any() or not bg.any():
            return
        contrast = abs(float(np.median(raw[fg])) - float(np.median(raw[bg])))
        cnr = contrast / max(noise_sigma(raw), self.noise_level())
        s_vox = 6.0 / (2.0 * np.sqrt(np.pi) * max(cnr, 1e-6))
        sigma = max(s_vox * min(self.sp), self.opts.smooth_frac * scale_mm)
        self.sigma_mm[object_id] = float(min(self.opts.smooth_mm, sigma))

    def set_support(self, object_id: int, vals: npt.NDArray[np.floating],
                    raw: npt.NDArray[np.floating] | None = None) -> None:
        """Remember the range of (denoised) intensities the target shows on its key slice:
        the 2nd to 98th percentiles of ``vals``, widened by a quarter of that span and the
        noise level on each side (``support``: a voxel outside is no target), and the 10th
        to 90th, widened by the noise level (``typical``: a part of the mask whose median lies
        outside is some other tissue). ``raw``: the target's undenoised values; when 1 % or
        more of them hold the padding value (air clamped to the scanner's minimum inside a
        trachea, say), the padding is allowed to be target."""
        pad = self.padding_value()
        if raw is not None and pad is not None:
            if raw.size and float(np.mean(raw == pad)) >= 0.01:
                self.pad_in_target.add(object_id)
            else:
                self.pad_in_target.discard(object_id)
        if vals.size < 4:
            return
        lo, hi = (float(v) for v in np.percentile(vals, [2, 98]))
        widen = 0.25 * (hi - lo) + self.noise_level()
        self.support[object_id] = (lo - widen, hi + widen)
        p10, p90 = (float(v) for v in np.percentile(vals, [10, 90]))
        self.typical[object_id] = (p10 - self.noise_level(), p90 + self.noise_level())

    def in_support(self, object_id: int, vals: npt.NDArray[np.floating]) -> npt.NDArray[np.bool_]:
        """Which of ``vals`` lie in the object's key-slice intensity range (all without one)."""
        rng = self.support.get(object_id)
        if rng is None:
            return np.ones(vals.shape, dtype=bool)
        return np.asarray((vals >= rng[0]) & (vals <= rng[1]), dtype=bool)

    def new_model(self, fg: F32, bg: F32) -> IntensityModel:
        """A model of ``fg`` against ``bg`` values, binned over their range (plus 10%)."""
        both = np.concatenate([fg.ravel(), bg.ravel()])
        lo, hi = np.percentile(both, [0.5, 99.5])
        span = max(float(hi - lo), 1e-3)
        lo, hi = float(lo) - 0.1 * span, float(hi) + 0.1 * span
        return fit_model(fg, bg, lo, hi, self.noise_level())

    def learn_from_mask(self, object_id: int, z: int, m: BoolArray) -> None:
        """Fit the object's model from a given 2D mask (foreground) and a ring around it."""
        bb = bbox(m)
        if bb is None:
            return
        ring_mm = self.opts.ring_mm
        mx, my = self.margin(ring_mm * 2)
        crop = Crop.around(bb, mx, my, *self.shape[:2])
        mc = m[crop.sl]
        ring = ndi.binary_dilation(mc, ball(ring_mm, self.sp)) & ~ndi.binary_dilation(mc)
        if not ring.any():
            ring = ~mc
        self.set_sigma(object_id, self.img[crop.x0:crop.x1, crop.y0:crop.y1, z], mc, ring,
                       float(np.sqrt(mc.sum() * self.sp[0] * self.sp[1] / np.pi)))
        img = self.smoothed(z, crop, object_id)
        self.models[object_id] = self.new_model(img[inner(mc)], img[ring])
        self.set_support(object_id, img[mc], self.img[crop.x0:crop.x1, crop.y0:crop.y1, z][mc])
        self.scale[object_id] = float(np.sqrt(mc.sum() * self.sp[0] * self.sp[1] / np.pi))
