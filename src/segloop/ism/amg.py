"""Automatic mask generation from a point grid, shared by the SAM and SAM 2 ISM backends.

segment-anything's ``SamAutomaticMaskGenerator`` (one crop) as SAM-6D configures it: a
``points_per_side``² grid in batches, three masks per point, masks kept when the predicted IoU is
above ``pred_iou_thresh`` and the stability score (IoU of the logits thresholded at ±1) reaches
``stability_score_thresh``; then box NMS at ``box_nms_thresh`` scored by predicted IoU. Which model
decodes a batch of points is given as a function; :func:`at_width` runs a generator on the
image resized to SAM-6D's ``segmentor_width_size`` (640) and resizes the masks back.
Imports numpy, torch and PIL.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .crop import mask_box
from .scoring import nms
from .types import Proposals

__all__ = ["AmgConfig", "Decoder", "at_width", "generate", "point_grid", "stability_score"]

#: (B, 2) points in image pixels (x, y) → ((B·K, H, W) logits at image size, (B·K,) predicted IoU)
Decoder = Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class AmgConfig:
    """SAM-6D's ``segmentor_model/sam.yaml`` (points_per_side is segment-anything's default)."""

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    box_nms_thresh: float = 0.7
    stability_offset: float = 1.0
    width: int = 640  # SAM-6D resizes the image to this width before SAM
    descriptor_batch: int = 16


def stability_score(logits: torch.Tensor, offset: float = 1.0, threshold: float = 0.0) -> torch.Tensor:
    """SAM's stability score of (N, H, W) mask logits: area above threshold+offset over area above
    threshold-offset (1 when the mask does not move as the cut-off shifts by ±offset)."""
    inter = (logits > threshold + offset).flatten(1).sum(1)
    union = (logits > threshold - offset).flatten(1).sum(1)
    return inter.float() / union.clamp(min=1).float()


def point_grid(n: int) -> np.ndarray:
    """(n², 2) points in [0, 1]² (x, y), segment-anything's ``build_point_grid``."""
    off = 1 / (2 * n)
    side = np.linspace(off, 1 - off, n)
    xs, ys = np.meshgrid(side, side)
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def _empty(h: int, w: int) -> Proposals:
    return Proposals(masks=np.zeros((0, h, w), dtype=bool), boxes=np.zeros((0, 4)))


@torch.no_grad()
def generate(size: tuple[int, int], decode: Decoder, cfg: AmgConfig,
             stability_score_thresh: float) -> Proposals:
    """Masks of an image of ``size`` (h, w) whose points ``decode`` turns into logits."""
    h, w = size
    pts = point_grid(cfg.points_per_side) * np.array([w, h])
    masks, scores = [], []
    for s in range(0, len(pts), cfg.points_per_batch):
        logits, iou = decode(pts[s:s + cfg.points_per_batch])
        keep = iou > cfg.pred_iou_thresh
        logits, iou = logits[keep], iou[keep]
        keep = stability_score(logits, cfg.stability_offset) >= stability_score_thresh
        masks.append((logits[keep] > 0).cpu().numpy())
        scores.append(iou[keep].float().cpu().numpy())
    m = np.concatenate(masks) if masks else np.zeros((0, h, w), dtype=bool)
    sc = np.concatenate(scores) if scores else np.zeros(0)
    nonempty = m.reshape(len(m), h * w).any(1)  # (-1 cannot be inferred when empty)
    m, sc = m[nonempty], sc[nonempty]
    if not len(m):
        return _empty(h, w)
    boxes = np.array([mask_box(x) for x in m])
    keep_idx = nms(boxes, sc, cfg.box_nms_thresh)
    return Proposals(masks=m[keep_idx], boxes=boxes[keep_idx])


def at_width(rgb: np.ndarray, width: int, gen: Callable[[np.ndarray], Proposals]) -> Proposals:
    """``gen`` on ``rgb`` resized to ``width`` (SAM-6D's ``preprocess_resize``), masks resized back."""
    h, w = rgb.shape[:2]
    if w == width:
        return gen(rgb)
    ch = int(width * h / w)
    p = gen(np.asarray(Image.fromarray(rgb).resize((width, ch), Image.Resampling.BILINEAR)))
    if not len(p):
        return _empty(h, w)
    t = F.interpolate(torch.from_numpy(p.masks[:, None].astype(np.float32)), (h, w), mode="bilinear",
                      align_corners=False)[:, 0].numpy() > 0.5
    t = t[t.reshape(len(t), -1).any(1)]
    return Proposals(masks=t, boxes=np.array([mask_box(x) for x in t]).reshape(-1, 4))
