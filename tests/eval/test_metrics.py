"""Metrics: tiny hand-computed cases, empty-mask conventions, and agreement with MONAI.

MONAI (and torch) are imported here only, never by segloop. Tolerances: MONAI computes in
float32, so NSD agrees to 1e-6 absolute and HD95 to 1e-5 relative (plus 1e-4 mm absolute).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage as ndi

from segloop.eval.metrics import (
    DiceMetric,
    HausdorffDistanceMetric,
    IoUMetric,
    SurfaceDiceMetric,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    compute_scores,
    compute_surface_dice,
    surface_distances,
    surface_voxels,
)


def test_dice_and_iou_by_hand() -> None:
    p = np.zeros((4, 4), bool)
    t = np.zeros((4, 4), bool)
    p[0, :3] = True  # 3 voxels
    t[0, 1:] = True  # 3 voxels, 2 shared
    assert compute_dice(p, t) == pytest.approx(2 * 2 / 6)
    assert compute_iou(p, t) == pytest.approx(2 / 4)


def test_surface_of_a_cube_and_a_border_touching_mask() -> None:
    m = np.zeros((5, 5, 5), bool)
    m[1:4, 1:4, 1:4] = True
    assert surface_voxels(m).sum() == 27 - 1  # only the centre survives erosion
    full = np.ones((3, 3, 3), bool)
    assert surface_voxels(full).sum() == 26  # the array border is background


def test_single_voxels_3_4_5_triangle() -> None:
    p = np.zeros((6, 6), bool)
    t = np.zeros((6, 6), bool)
    p[0, 0] = True
    t[3, 4] = True
    assert compute_hausdorff_distance(p, t) == pytest.approx(5.0)
    assert compute_hausdorff_distance(p, t, spacing=(2.0, 0.5)) == pytest.approx(math.hypot(6.0, 2.0))
    assert compute_surface_dice(p, t, tolerance_mm=4.9) == 0.0
    assert compute_surface_dice(p, t, tolerance_mm=5.0) == 1.0


def test_shifted_cube_with_anisotropic_spacing() -> None:
    t = np.zeros((20, 20, 12), bool)
    t[4:16, 4:16, 2:8] = True
    p = np.roll(t, 2, axis=2)  # two slices up, 3 mm apart
    sp = (0.8, 0.8, 3.0)
    # the top face of p lies 2 slices (6 mm) above the truth's: the farthest surface point
    assert compute_hausdorff_distance(p, t, sp, percentile=100) == pytest.approx(6.0)
    d = surface_distances(p, t, sp)
    assert d.pred_to_truth.max() == pytest.approx(6.0) and d.truth_to_pred.max() == pytest.approx(6.0)
    # with a 6 mm tolerance every surface voxel counts, with 2 mm the displaced caps do not
    assert compute_surface_dice(p, t, sp, tolerance_mm=6.0) == 1.0
    assert compute_surface_dice(p, t, sp, tolerance_mm=2.0) < 1.0


def test_identical_masks() -> None:
    m = np.zeros((10, 10, 10), bool)
    m[2:7, 3:8, 1:9] = True
    s = compute_scores(m, m, (1.0, 2.0, 3.0))
    assert (s.dice, s.iou, s.nsd, s.hd95) == (1.0, 1.0, 1.0, 0.0)


def test_empty_masks_have_defined_scores() -> None:
    empty = np.zeros((6, 6, 6), bool)
    full = empty.copy()
    full[2:4, 2:4, 2:4] = True
    both = compute_scores(empty, empty, (1, 1, 1))
    assert both.as_dict() == {"dice": 1.0, "iou": 1.0, "nsd": 1.0, "hd95": 0.0}
    for p, t in ((empty, full), (full, empty)):
        s = compute_scores(p, t, (1, 1, 1))
        assert (s.dice, s.iou, s.nsd) == (0.0, 0.0, 0.0)
        assert math.isinf(s.hd95)


def test_bad_arguments() -> None:
    m = np.zeros((3, 3, 3), bool)
    with pytest.raises(ValueError, match="shape"):
        compute_dice(m, np.zeros((3, 3), bool))
    with pytest.raises(ValueError, match="spacing"):
        compute_surface_dice(m, m, (1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        compute_hausdorff_distance(m, m, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="tolerance"):
        compute_surface_dice(m, m, None, tolerance_mm=-1)


def test_cumulative_metrics() -> None:
    a = np.zeros((8, 8), bool)
    a[2:6, 2:6] = True
    b = np.zeros_like(a)
    dice, iou, nsd, hd = DiceMetric(), IoUMetric(), SurfaceDiceMetric(1.0), HausdorffDistanceMetric()
    for p in (a, b):
        dice(p, a)
        iou(p, a)
        nsd(p, a, (1.0, 1.0))
        hd(p, a, (1.0, 1.0))
    assert dice.values == [1.0, 0.0] and dice.aggregate() == 0.5
    assert iou.aggregate() == 0.5 and nsd.aggregate() == 0.5
    assert hd.aggregate() == 0.0 and hd.n_infinite == 1
    dice.reset()
    assert math.isnan(dice.aggregate())


# ---- agreement with MONAI ---------------------------------------------------------------------


def _blob(rng: np.random.Generator, shape: tuple[int, ...], sigma: float, frac: float) -> np.ndarray:
    f = ndi.gaussian_filter(rng.random(shape), sigma)
    return np.asarray(f > np.quantile(f, 1 - frac))


def _sphere(shape: tuple[int, ...], centre: tuple[float, ...], r: float) -> np.ndarray:
    g = np.ogrid[tuple(slice(0, n) for n in shape)]
    return np.asarray(sum((gi - c) ** 2 for gi, c in zip(g, centre, strict=True)) <= r * r)


def _cases() -> list[tuple[str, np.ndarray, np.ndarray, tuple[float, ...]]]:
    rng = np.random.default_rng(42)
    out = []
    shape = (40, 36, 18)
    for i in range(3):
        out.append((f"random-blobs-{i}", _blob(rng, shape, 2.5, 0.2), _blob(rng, shape, 2.5, 0.25),
                    (0.7, 0.9, 3.0)))
    t = _sphere(shape, (20, 18, 9), 8)
    out.append(("sphere-shifted", _sphere(shape, (22, 17, 10), 8), t, (0.8, 0.8, 2.5)))
    out.append(("sphere-vs-noisy", t ^ (rng.random(shape) < 0.02), t, (1.0, 0.5, 4.0)))
    cube = np.zeros(shape, bool)
    cube[:15, :, 3:12] = True  # touches the array border on two axes
    out.append(("border-cube-vs-sphere", cube, t, (0.6, 1.2, 2.0)))
    thin = np.zeros(shape, bool)
    thin[20, 5:30, 2:16] = True
    out.append(("thin-sheet", thin, np.roll(thin, 1, axis=0), (0.5, 0.5, 5.0)))
    two = (rng.random((60, 50)) < 0.3) | _sphere((60, 50), (30, 25), 12)
    out.append(("2d-speckle", two, _sphere((60, 50), (28, 27), 14), (0.3, 0.7)))
    return out


@pytest.mark.parametrize(("name", "pred", "truth", "spacing"), _cases(), ids=[c[0] for c in _cases()])
def test_matches_monai(name: str, pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]) -> None:
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    p = torch.from_numpy(pred.astype(np.float32))[None, None]
    t = torch.from_numpy(truth.astype(np.float32))[None, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for tol in (1.0, 2.0, 5.0):
            ref = float(monai_metrics.compute_surface_dice(p, t, [tol], spacing=list(spacing)).item())
            assert compute_surface_dice(pred, truth, spacing, tol) == pytest.approx(ref, abs=1e-6), tol
        ref_hd = float(monai_metrics.compute_hausdorff_distance(p, t, percentile=95, spacing=list(spacing)))
        ref_dice = float(monai_metrics.compute_dice(p, t).item())
    assert compute_hausdorff_distance(pred, truth, spacing) == pytest.approx(ref_hd, rel=1e-5, abs=1e-4)
    assert compute_dice(pred, truth) == pytest.approx(ref_dice, abs=1e-6)
