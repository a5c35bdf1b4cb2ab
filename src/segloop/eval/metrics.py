"""Overlap and surface metrics of a predicted mask against the truth, in physical units (mm).

Dice, IoU, NSD (normalized surface Dice at a tolerance in mm) and HD95 (95th-percentile symmetric
Hausdorff distance in mm) on boolean arrays of any dimension (``(X, Y, Z)`` volumes, ``(X, Y)``
images) with a voxel spacing in mm per array axis. Each metric comes as a function
(``compute_dice`` ...) and as a small cumulative class (``DiceMetric`` ...) in MONAI's style.

Surfaces are the mask voxels removed by one binary erosion with the 6-connected (2D: 4-connected)
cross, voxels outside the array counting as background (a mask touching the border has a surface
there). Surface distances are exact Euclidean distances in mm from every surface voxel of one mask
to the nearest surface voxel of the other (``scipy.ndimage.distance_transform_edt`` with
``sampling=spacing`` on the bounding box of both masks). These are the definitions of MONAI's
``compute_surface_dice`` (``use_subvoxels=False``) and ``compute_hausdorff_distance``
(``percentile=95``); tests/eval/test_metrics.py checks the numbers against MONAI.

Empty masks (MONAI gives NaN or inf there; segloop defines every case):

=================  ====  ====  ====  =====
prediction, truth  Dice  IoU   NSD   HD95
=================  ====  ====  ====  =====
both empty         1     1     1     0
one of them empty  0     0     0     inf
=================  ====  ====  ====  =====

HD95 is ``inf`` when exactly one mask is empty (no surface to measure a distance to); reports
average the finite values and count the infinite ones separately (see segloop.eval.report).

Imports numpy and scipy only: no torch, no monai, nothing else of segloop.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.ism, segloop.train (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

__all__ = [
    "DEFAULT_TOLERANCE_MM",
    "DiceMetric",
    "HausdorffDistanceMetric",
    "IoUMetric",
    "MetricName",
    "Scores",
    "SurfaceDiceMetric",
    "SurfaceDistances",
    "compute_dice",
    "compute_hausdorff_distance",
    "compute_iou",
    "compute_scores",
    "compute_surface_dice",
    "surface_distances",
    "surface_voxels",
]

#: default NSD tolerance in mm (issue 2: "NSD at 2 mm")
DEFAULT_TOLERANCE_MM = 2.0

Mask = npt.NDArray[np.bool_]
Spacing = Sequence[float]


class MetricName(StrEnum):
    """Names of the metrics, as used for report columns."""

    DICE = "dice"
    IOU = "iou"
    NSD = "nsd"
    HD95 = "hd95"


def _check_pair(pred: npt.ArrayLike, truth: npt.ArrayLike) -> tuple[Mask, Mask]:
    p = np.asarray(pred).astype(bool, copy=False)
    t = np.asarray(truth).astype(bool, copy=False)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} differs from truth shape {t.shape}")
    return p, t


def _check_spacing(spacing: Spacing | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    sp = tuple(float(s) for s in spacing)
    if len(sp) != ndim:
        raise ValueError(f"spacing {sp} has {len(sp)} values for a {ndim}D mask")
    if not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing {sp} must be finite and positive (mm per voxel)")
    return sp


def compute_dice(pred: npt.ArrayLike, truth: npt.ArrayLike) -> float:
    """Dice ``2|P∩T| / (|P|+|T|)`` of two boolean masks of equal shape; 1.0 when both are empty."""
    p, t = _check_pair(pred, truth)
    denom = int(p.sum()) + int(t.sum())
    if denom == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, t).sum()) / denom


def compute_iou(pred: npt.ArrayLike, truth: npt.ArrayLike) -> float:
    """Intersection over union ``|P∩T| / |P∪T|``; 1.0 when both masks are empty."""
    p, t = _check_pair(pred, truth)
    union = int(np.logical_or(p, t).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(p, t).sum()) / union


def surface_voxels(mask: npt.ArrayLike) -> Mask:
    """The surface of a boolean mask: its voxels that one erosion (cross element) removes.

    Voxels outside the array count as background, so a mask touching the array border has
    surface voxels on it. Same shape as ``mask``, bool.
    """
    m = np.asarray(mask).astype(bool, copy=False)
    return np.asarray(m & ~ndi.binary_erosion(m, border_value=0), dtype=bool)


@dataclass(frozen=True)
class SurfaceDistances:
    """Distances in mm between two surfaces.

    pred_to_truth: ``(Np,)`` float64, from each surface voxel of the prediction to the nearest
    surface voxel of the truth; truth_to_pred: ``(Nt,)`` the other way. When one mask is empty
    its own array is empty and the other's is all ``inf``.
    """

    pred_to_truth: npt.NDArray[np.float64]
    truth_to_pred: npt.NDArray[np.float64]


def _bbox_slices(m: Mask) -> tuple[slice, ...]:
    """Bounding box of the True voxels, one voxel wider on each side (clipped to the array)."""
    out = []
    for ax in range(m.ndim):
        other = tuple(a for a in range(m.ndim) if a != ax)
        idx = np.flatnonzero(m.any(axis=other))
        out.append(slice(max(int(idx[0]) - 1, 0), min(int(idx[-1]) + 2, m.shape[ax])))
    return tuple(out)


def surface_distances(
    pred: npt.ArrayLike, truth: npt.ArrayLike, spacing: Spacing | None = None
) -> SurfaceDistances:
    """Symmetric surface distances (mm) between two boolean masks of equal shape.

    spacing: voxel size in mm along each array axis (None: 1 mm). Computed on the bounding box
    of both masks (plus one voxel), which gives the same surfaces and distances as the full array.
    """
    p, t = _check_pair(pred, truth)
    sp = _check_spacing(spacing, p.ndim)
    empty = np.zeros((0,), np.float64)
    p_any, t_any = bool(p.any()), bool(t.any())
    if not p_any and not t_any:
        return SurfaceDistances(empty, empty)
    if not p_any:
        return SurfaceDistances(empty, np.full(int(surface_voxels(t).sum()), np.inf))
    if not t_any:
        return SurfaceDistances(np.full(int(surface_voxels(p).sum()), np.inf), empty)
    box = _bbox_slices(p | t)
    pc, tc = p[box], t[box]
    # erosion on the crop equals erosion on the full array: the crop keeps a one-voxel
    # background margin except where it meets the array border, which erodes the same way
    sp_surf, st_surf = surface_voxels(pc), surface_voxels(tc)
    dist_to_t = ndi.distance_transform_edt(~st_surf, sampling=sp)
    dist_to_p = ndi.distance_transform_edt(~sp_surf, sampling=sp)
    return SurfaceDistances(
        np.asarray(dist_to_t[sp_surf], np.float64), np.asarray(dist_to_p[st_surf], np.float64)
    )


def _nsd(d: SurfaceDistances, tolerance_mm: float) -> float:
    n = d.pred_to_truth.size + d.truth_to_pred.size
    if n == 0:
        return 1.0
    ok = int((d.pred_to_truth <= tolerance_mm).sum()) + int((d.truth_to_pred <= tolerance_mm).sum())
    return ok / n


def _hd(d: SurfaceDistances, percentile: float) -> float:
    if d.pred_to_truth.size == 0 and d.truth_to_pred.size == 0:
        return 0.0
    if d.pred_to_truth.size == 0 or d.truth_to_pred.size == 0:
        return math.inf
    return max(
        float(np.percentile(d.pred_to_truth, percentile)),
        float(np.percentile(d.truth_to_pred, percentile)),
    )


def compute_surface_dice(
    pred: npt.ArrayLike,
    truth: npt.ArrayLike,
    spacing: Spacing | None = None,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> float:
    """Normalized surface Dice in [0, 1]: the fraction of both surfaces within ``tolerance_mm``.

    ``(#pred surface voxels within tol of truth + #truth surface voxels within tol of pred) /
    (#pred surface voxels + #truth surface voxels)``; 1.0 when both masks are empty, 0.0 when one is.
    """
    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise ValueError(f"tolerance must be a finite number of mm >= 0, got {tolerance_mm}")
    return _nsd(surface_distances(pred, truth, spacing), tolerance_mm)


def compute_hausdorff_distance(
    pred: npt.ArrayLike,
    truth: npt.ArrayLike,
    spacing: Spacing | None = None,
    percentile: float = 95.0,
) -> float:
    """Symmetric percentile Hausdorff distance in mm (default HD95).

    ``max(P_q(d(pred→truth)), P_q(d(truth→pred)))`` with numpy's linear-interpolated percentile
    ``q``; ``percentile=100`` is the classic Hausdorff distance. 0.0 when both masks are empty,
    ``inf`` when exactly one is.
    """
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in 0..100, got {percentile}")
    return _hd(surface_distances(pred, truth, spacing), percentile)


@dataclass(frozen=True)
class Scores:
    """All metrics of one prediction: dice, iou, nsd in [0, 1]; hd95 in mm (may be inf)."""

    dice: float
    iou: float
    nsd: float
    hd95: float

    def as_dict(self) -> dict[str, float]:
        """``{"dice": ..., "iou": ..., "nsd": ..., "hd95": ...}``."""
        return {"dice": self.dice, "iou": self.iou, "nsd": self.nsd, "hd95": self.hd95}


def compute_scores(
    pred: npt.ArrayLike,
    truth: npt.ArrayLike,
    spacing: Spacing | None = None,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> Scores:
    """Dice, IoU, NSD at ``tolerance_mm`` and HD95 (mm) at once (surface distances computed once)."""
    d = surface_distances(pred, truth, spacing)
    return Scores(
        dice=compute_dice(pred, truth),
        iou=compute_iou(pred, truth),
        nsd=_nsd(d, tolerance_mm),
        hd95=_hd(d, 95.0),
    )


class _Cumulative:
    """Accumulates one value per call; ``aggregate()`` is the mean of the finite values."""

    def __init__(self) -> None:
        self._values: list[float] = []

    def _add(self, value: float) -> float:
        self._values.append(value)
        return value

    @property
    def values(self) -> list[float]:
        """Every value computed since the last ``reset()``."""
        return list(self._values)

    def aggregate(self) -> float:
        """Mean of the finite values so far (NaN when there are none)."""
        finite = [v for v in self._values if math.isfinite(v)]
        return float(np.mean(finite)) if finite else math.nan

    def reset(self) -> None:
        """Forget the values."""
        self._values.clear()


class DiceMetric(_Cumulative):
    """Cumulative :func:`compute_dice`: ``metric(pred, truth)`` returns and stores one value."""

    def __call__(self, pred: npt.ArrayLike, truth: npt.ArrayLike) -> float:
        return self._add(compute_dice(pred, truth))


class IoUMetric(_Cumulative):
    """Cumulative :func:`compute_iou`."""

    def __call__(self, pred: npt.ArrayLike, truth: npt.ArrayLike) -> float:
        return self._add(compute_iou(pred, truth))


class SurfaceDiceMetric(_Cumulative):
    """Cumulative :func:`compute_surface_dice` at a fixed tolerance (mm)."""

    def __init__(self, tolerance_mm: float = DEFAULT_TOLERANCE_MM) -> None:
        super().__init__()
        self.tolerance_mm = tolerance_mm

    def __call__(
        self, pred: npt.ArrayLike, truth: npt.ArrayLike, spacing: Spacing | None = None
    ) -> float:
        return self._add(compute_surface_dice(pred, truth, spacing, self.tolerance_mm))


class HausdorffDistanceMetric(_Cumulative):
    """Cumulative :func:`compute_hausdorff_distance` (default percentile 95).

    ``aggregate()`` averages the finite distances; ``n_infinite`` counts the others.
    """

    def __init__(self, percentile: float = 95.0) -> None:
        super().__init__()
        self.percentile = percentile

    def __call__(
        self, pred: npt.ArrayLike, truth: npt.ArrayLike, spacing: Spacing | None = None
    ) -> float:
        return self._add(compute_hausdorff_distance(pred, truth, spacing, self.percentile))

    @property
    def n_infinite(self) -> int:
        """How many values were infinite (exactly one mask empty)."""
        return sum(1 for v in self._values if math.isinf(v))
