"""Weights-free mask proposals from an RGB-D frame: support-plane removal, depth-edge regions,
colour superpixels.

1. The dominant plane (the table) is found by RANSAC on the back-projected depth and removed
   (points within ``plane_tol_mm``).
2. The remaining pixels are cut at depth discontinuities (|Δdepth| > fraction · depth, at three
   fractions: coarse to fine) and labelled into 4-connected regions; each region grows back over
   the cut pixels (≤ 3 px) and has its holes filled: one proposal per region and scale.
3. Felzenszwalb colour superpixels (half resolution) re-cut every depth region: the superpixels
   lying mostly inside it form one more proposal (a colour-consistent version of the region).
Near-duplicates (mask IoU > 0.9 at quarter resolution) are dropped. Imports numpy, scipy,
scikit-image; never torch.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import felzenszwalb

from .crop import mask_box
from .types import Proposals, Scene

__all__ = ["depth_proposals", "fit_plane"]


def backproject(depth_mm: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(H, W, 3) camera-frame points in mm (x right, y down, z = depth) of a depth image."""
    h, w = depth_mm.shape
    v, u = np.mgrid[0:h, 0:w]
    x = (u - K[0, 2]) * depth_mm / K[0, 0]
    y = (v - K[1, 2]) * depth_mm / K[1, 1]
    return np.stack([x, y, depth_mm], axis=-1)


def fit_plane(points: np.ndarray, rng: np.random.Generator, tol: float = 10.0,
              iterations: int = 100, sample: int = 5000) -> tuple[np.ndarray, float] | None:
    """RANSAC plane (unit normal n, offset c: n·p + c = 0) of (N, 3) points; None if degenerate."""
    if len(points) < 3:
        return None
    sub = points[rng.choice(len(points), min(len(points), sample), replace=False)]
    best_n, best = 0, None
    for _ in range(iterations):
        s = sub[rng.choice(len(sub), 3, replace=False)]
        n = np.cross(s[1] - s[0], s[2] - s[0])
        norm = np.linalg.norm(n)
        if norm < 1e-9:
            continue
        n = n / norm
        c = -float(n @ s[0])
        k = int((np.abs(sub @ n + c) < tol).sum())
        if k > best_n:
            best_n, best = k, (n, c)
    return best


def _regions(depth: np.ndarray, keep: np.ndarray, frac: float, min_area: int) -> list[np.ndarray]:
    thr = np.maximum(5.0, frac * depth)
    ex = np.zeros_like(keep)
    ey = np.zeros_like(keep)
    ex[:, 1:] = np.abs(np.diff(depth, axis=1)) > thr[:, 1:]
    ey[1:, :] = np.abs(np.diff(depth, axis=0)) > thr[1:, :]
    edge = ex | ey
    edge[:, :-1] |= ex[:, 1:]
    edge[:-1, :] |= ey[1:, :]
    lab, _ = ndi.label(keep & ~edge)
    dist, (iy, ix) = ndi.distance_transform_edt(lab == 0, return_indices=True)
    grown = np.where(keep & (dist <= 3), lab[iy, ix], 0)
    out = []
    for i, sl in enumerate(ndi.find_objects(grown)):
        if sl is None or (sl[0].stop - sl[0].start) * (sl[1].stop - sl[1].start) < min_area:
            continue  # filling cannot grow a region beyond its box: too small either way
        m = np.zeros(depth.shape, dtype=bool)
        m[sl] = ndi.binary_fill_holes(grown[sl] == i + 1)
        if m.sum() >= min_area:
            out.append(m)
    return out


def _dedupe(masks: list[np.ndarray], thresh: float = 0.9) -> list[np.ndarray]:
    """Drop masks whose IoU (on a 4× subsampled grid) with an earlier kept one is > ``thresh``."""
    if not masks:
        return []
    small = np.stack([m[::4, ::4].ravel() for m in masks]).astype(np.float32)
    inter = (small @ small.T).astype(np.float64)  # exact: counts < 2^24
    area = small.sum(1)
    iou = inter / np.maximum(area[:, None] + area[None] - inter, 1)
    kept: list[int] = []
    for i in range(len(masks)):
        if all(iou[i, j] <= thresh for j in kept):
            kept.append(i)
    return [masks[i] for i in kept]


def _fill_in_box(m: np.ndarray) -> np.ndarray:
    """``binary_fill_holes(m)`` computed on the mask's bounding box only (same result: every
    background pixel outside the box touches the border through background)."""
    out = np.zeros_like(m)
    ys, xs = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
    if len(ys):
        sl = np.s_[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1]
        out[sl] = ndi.binary_fill_holes(m[sl])
    return out


def depth_proposals(scene: Scene, rng: np.random.Generator, plane_tol_mm: float = 12.0,
                    fractions: tuple[float, ...] = (0.008, 0.015, 0.03),
                    min_area_frac: float = 3e-4, max_area_frac: float = 0.25) -> Proposals:
    """Candidate object masks of ``scene`` (see module docstring); boxes are the masks' boxes."""
    depth = scene.depth_mm.astype(np.float64)
    h, w = depth.shape
    valid = depth > 0
    keep = valid.copy()
    pts = backproject(depth, scene.K)
    plane = fit_plane(pts[valid], rng)
    if plane is not None:
        n, c = plane
        keep &= np.abs(pts @ n + c) > plane_tol_mm
    min_area = max(1, int(min_area_frac * h * w))
    regions: list[np.ndarray] = []
    for frac in fractions:
        regions += _regions(depth, keep, frac, min_area)
    half = scene.rgb[::2, ::2]
    seg = felzenszwalb(half, scale=200, sigma=0.8, min_size=30)
    seg = np.repeat(np.repeat(seg, 2, axis=0), 2, axis=1)[:h, :w]
    total = np.bincount(seg.ravel(), minlength=int(seg.max()) + 1)
    masks = list(regions)
    for r in regions:
        counts = np.bincount(seg[r], minlength=len(total))
        inside = counts / np.maximum(total, 1) > 0.5
        if inside.any():
            m = _fill_in_box(inside[seg])
            if m.sum() >= min_area:
                masks.append(m)
    masks = [m for m in masks if m.sum() <= max_area_frac * h * w]
    masks = _dedupe(masks)
    if not masks:
        return Proposals(masks=np.zeros((0, h, w), dtype=bool), boxes=np.zeros((0, 4)))
    return Proposals(masks=np.stack(masks), boxes=np.array([mask_box(m) for m in masks]))
