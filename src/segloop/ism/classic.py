"""The weights-free ``classic`` ISM backend: depth/colour proposals, colour + shape descriptors.

Stands in for SAM + DINOv2 where no weights are available (a laptop, CI). Every crop goes through
SAM-6D's crop-resize-pad to 224×224 and a 16×16 grid of 14-pixel patches, as DINOv2 ViT-L/14 sees it:

* global descriptor (stands for the CLS token): a Hellinger-normalised CIE-Lab colour histogram
  of the masked pixels (4 L × 6 a × 6 b bins) beside the zero-mean 16×16 silhouette of the mask,
  each half L2-normalised;
* patch descriptor (stands for the patch tokens): per patch the mean Lab colour and an 8-bin
  gradient-orientation histogram, L2-normalised; zero for patches less than half inside the mask.

Imports numpy, scikit-image and segloop.ism; never torch.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from skimage.color import rgb2lab

from .crop import crop_resize_pad, mask_box
from .depthseg import depth_proposals
from .types import Descriptors, Proposals, Scene, Templates

__all__ = ["ClassicBackend", "describe_crops"]

CROP = 224
PATCH = 14
GRID = CROP // PATCH


def _global(lab: np.ndarray, mask: np.ndarray) -> np.ndarray:
    px = lab[mask]
    if len(px):
        hist, _ = np.histogramdd(px, bins=(4, 6, 6), range=((0, 100), (-60, 60), (-60, 60)))
        col = np.sqrt(hist.ravel() / len(px))
    else:
        col = np.zeros(4 * 6 * 6)
    sil = mask.reshape(GRID, PATCH, GRID, PATCH).mean(axis=(1, 3)).ravel()
    sil = sil - sil.mean()
    parts = [v / max(float(np.linalg.norm(v)), 1e-9) for v in (col, sil)]
    return np.concatenate(parts)


def _patches(lab: np.ndarray, mask: np.ndarray) -> np.ndarray:
    g = lab[..., 0]
    gy, gx = np.gradient(g)
    mag = np.hypot(gx, gy)
    ori = ((np.arctan2(gy, gx) % np.pi) / np.pi * 8).astype(int) % 8
    tiles = (GRID, PATCH, GRID, PATCH)
    inside = mask.reshape(tiles).mean(axis=(1, 3)) > 0.5
    m = mask.astype(np.float64)
    cnt = np.maximum(m.reshape(tiles).sum(axis=(1, 3)), 1)
    mean = np.stack([(lab[..., k] * m).reshape(tiles).sum(axis=(1, 3)) / cnt for k in range(3)], -1)
    mean = (mean - np.array([50.0, 0.0, 0.0])) / 50.0
    hog = np.stack([((ori == b) * mag * m).reshape(tiles).sum(axis=(1, 3)) for b in range(8)], -1)
    hog = hog / np.maximum(hog.sum(-1, keepdims=True), 1e-9)
    feat = np.concatenate([mean, hog], axis=-1).reshape(GRID * GRID, -1)
    feat = feat / np.maximum(np.linalg.norm(feat, axis=1, keepdims=True), 1e-9)
    return np.asarray(feat * inside.reshape(-1, 1))


def describe_crops(images: list[np.ndarray], masks: list[np.ndarray]) -> Descriptors:
    """Descriptors of crops (each (224, 224, 3) uint8 with its (224, 224) bool mask)."""
    glob, pat = [], []
    for img, m in zip(images, masks, strict=True):
        lab = rgb2lab(img)
        glob.append(_global(lab, m))
        pat.append(_patches(lab, m))
    d = 4 * 6 * 6 + GRID * GRID
    return Descriptors(global_=np.array(glob).reshape(-1, d),
                       patches=np.array(pat).reshape(-1, GRID * GRID, 11))


class ClassicBackend:
    """Proposals from depth and colour; descriptors from colour and silhouette (no weights)."""

    name: ClassVar[str] = "classic"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def proposals(self, scene: Scene, stability_score_thresh: float) -> Proposals:
        """Depth-region and superpixel masks (``stability_score_thresh`` is SAM's: unused here)."""
        return depth_proposals(scene, np.random.default_rng(self.seed))

    def describe_templates(self, templates: Templates) -> Descriptors:
        """Descriptors of the templates (masked RGB, crop-resize-pad of the mask's box)."""
        imgs, masks = [], []
        for rgb, m in zip(templates.rgb, templates.masks, strict=True):
            box = mask_box(m)
            imgs.append(crop_resize_pad(rgb * m[..., None], box))
            masks.append(crop_resize_pad(m, box))
        return describe_crops(imgs, masks)

    def describe_proposals(self, scene: Scene, proposals: Proposals) -> Descriptors:
        """Descriptors of each proposal (masked RGB crop of its box)."""
        imgs, masks = [], []
        h, w = scene.rgb.shape[:2]
        for m, box in zip(proposals.masks, proposals.boxes, strict=True):
            x0, y0, x1, y1 = (round(float(v)) for v in box)
            if 0 <= x0 <= x1 < w and 0 <= y0 <= y1 < h:  # mask the box's pixels only: same crop
                sl = np.s_[y0:y1 + 1, x0:x1 + 1]
                local = (0, 0, x1 - x0, y1 - y0)
                imgs.append(crop_resize_pad(scene.rgb[sl] * m[sl][..., None], local))
                masks.append(crop_resize_pad(m[sl], local))
            else:
                imgs.append(crop_resize_pad(scene.rgb * m[..., None], box))
                masks.append(crop_resize_pad(m, box))
        return describe_crops(imgs, masks)
