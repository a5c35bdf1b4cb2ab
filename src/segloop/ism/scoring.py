"""SAM-6D's ISM scores, final score and NMS (``model/detector.py``, ``model/loss.py``), in numpy.

For P proposals against the T templates of one object:

* semantic: cosine similarity of global descriptors clamped to [0, 1], mean of the top 5 over the
  templates; proposals scoring <= 0.2 are dropped; the best template is the argmax;
* appearance: for each query patch the best cosine against the best template's patches, averaged
  over the query's non-empty patches, clamped to [0, 1];
* visible ratio: the best template's patches whose best query match is > 0.5, over its non-empty ones;
* geometric: CAD points (mm) rotated by the best template's rotation, translated to the mean of the
  proposal's back-projected depth, projected with the scene's K (truncated to int and clamped to
  the image as SAM-6D does); the IoU of their box with the proposal's box. SAM-6D's ``compute_iou``
  returns 0 for the whole batch when any pair does not overlap; here each pair gets its own IoU;
* final = (semantic + appearance + geometric · visible) / (2 + visible); then box NMS at 0.25.

Imports numpy and threadpoolctl.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from .types import Descriptors, Proposals, Scene, Templates

__all__ = ["ScoreConfig", "Scores", "box_iou", "filter_small", "nms", "score_proposals"]


@dataclass(frozen=True)
class ScoreConfig:
    """SAM-6D's ISM_sam.yaml values."""

    top_k: int = 5
    confidence_thresh: float = 0.2
    visible_thresh: float = 0.5
    nms_thresh: float = 0.25
    min_box_size: float = 0.05  # relative side: box area > min_box_size² of the image
    min_mask_size: float = 3e-4  # relative mask area


@dataclass(frozen=True)
class Scores:
    """Per kept proposal (``index`` into the input proposals): the score parts and best template."""

    index: np.ndarray
    semantic: np.ndarray
    appearance: np.ndarray
    geometric: np.ndarray
    visible_ratio: np.ndarray
    template: np.ndarray

    @property
    def final(self) -> np.ndarray:
        """SAM-6D's final score, in [0, 1]."""
        v = self.visible_ratio
        return np.asarray((self.semantic + self.appearance + self.geometric * v) / (2 + v))


def _unit(x: np.ndarray) -> np.ndarray:
    return np.asarray(x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of (N, 4) xyxy boxes ``a`` and ``b`` (areas as (x1-x0)(y1-y0), SAM-6D's)."""
    tl = np.maximum(a[:, :2], b[:, :2])
    br = np.minimum(a[:, 2:], b[:, 2:])
    wh = np.clip(br - tl, 0, None)
    inter = wh[:, 0] * wh[:, 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return np.asarray(inter / np.maximum(area_a + area_b - inter, 1e-12))


def nms(boxes: np.ndarray, scores: np.ndarray, thresh: float) -> np.ndarray:
    """Indices kept by greedy box NMS (highest score first, drop IoU > ``thresh``), best first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while len(order):
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        ious = box_iou(np.repeat(boxes[i:i + 1], len(rest), axis=0), boxes[rest])
        order = rest[ious <= thresh]
    return np.array(keep, dtype=np.int64)


def filter_small(proposals: Proposals, cfg: ScoreConfig) -> np.ndarray:
    """Boolean keep-mask of SAM-6D's ``remove_very_small_detections``."""
    h, w = proposals.masks.shape[1:]
    b = proposals.boxes
    box_area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) / (h * w)
    mask_area = proposals.masks.reshape(len(proposals), -1).sum(1) / (h * w)
    return np.asarray((box_area > cfg.min_box_size ** 2) & (mask_area > cfg.min_mask_size))


def _translation(mask: np.ndarray, scene: Scene) -> np.ndarray:
    """Mean camera-frame point (mm) of the mask's valid depth pixels (SAM-6D's translation).

    Searched within the mask's own bounding box (found from its row/column projections), which
    visits the same pixels in the same order as a whole-image search, at a fraction of the cost."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return np.zeros(3)
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    ys, xs = np.nonzero(mask[y0:y1, x0:x1] & (scene.depth_mm[y0:y1, x0:x1] > 0))
    ys, xs = ys + y0, xs + x0
    if not len(ys):
        return np.zeros(3)
    z = scene.depth_mm[ys, xs].astype(np.float64)
    K = scene.K
    x = (xs - K[0, 2]) * z / K[0, 0]
    y = (ys - K[1, 2]) * z / K[1, 1]
    return np.array([x.mean(), y.mean(), z.mean()])


def projected_boxes(scene: Scene, proposals: Proposals, rotations: np.ndarray,
                    points: np.ndarray) -> np.ndarray:
    """(P, 4) xyxy boxes of the CAD points posed with each proposal's rotation and depth translation."""
    h, w = scene.depth_mm.shape
    out = np.zeros((len(proposals), 4))
    for i, (m, R) in enumerate(zip(proposals.masks, rotations, strict=True)):
        pc = points @ R.T + _translation(m, scene)
        hom = pc @ scene.K.T
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = hom[:, :2] / hom[:, 2:3]
        uv = np.nan_to_num(uv, nan=0.0, posinf=1e9, neginf=-1e9)
        uv = np.trunc(np.clip(uv, -2**31, 2**31 - 1))
        uv[:, 0] = np.clip(uv[:, 0], 0, w - 1)
        uv[:, 1] = np.clip(uv[:, 1], 0, h - 1)
        out[i] = [*uv.min(0), *uv.max(0)]
    return out


def score_proposals(scene: Scene, proposals: Proposals, query: Descriptors, ref: Descriptors,
                    templates: Templates, cfg: ScoreConfig) -> Scores:
    """SAM-6D's semantic, appearance, visible-ratio and geometric scores (see module docstring).

    BLAS runs single-threaded here: these are many small products, and a multi-threaded OpenBLAS
    on a busy machine spends 10-100× longer synchronising its threads than computing."""
    with threadpool_limits(limits=1, user_api="blas"):
        return _score(scene, proposals, query, ref, templates, cfg)


def _score(scene: Scene, proposals: Proposals, query: Descriptors, ref: Descriptors,
           templates: Templates, cfg: ScoreConfig) -> Scores:
    sims = np.clip(_unit(query.global_) @ _unit(ref.global_).T, 0.0, 1.0)  # P × T
    k = min(cfg.top_k, sims.shape[1])
    semantic_all = np.sort(sims, axis=1)[:, -k:].mean(axis=1) if sims.size else np.zeros(len(sims))
    idx = np.nonzero(semantic_all > cfg.confidence_thresh)[0]
    best = np.argmax(sims[idx], axis=1) if len(idx) else np.zeros(0, dtype=np.int64)
    appe = np.zeros(len(idx))
    vis = np.zeros(len(idx))
    for j, (i, t) in enumerate(zip(idx, best, strict=True)):
        q, r = query.patches[i], ref.patches[t]
        s = q @ r.T  # Nq × Nr
        n_q = np.count_nonzero(q.sum(-1)) + 1e-6
        appe[j] = np.clip(s.max(axis=1).sum() / n_q, 0.0, 1.0)
        per_ref = s.max(axis=0)
        vis[j] = np.count_nonzero(per_ref * (per_ref > cfg.visible_thresh)) / (
            np.count_nonzero(per_ref) + 1e-6)
    sub = proposals.subset(idx)
    geo = box_iou(projected_boxes(scene, sub, templates.rotations[best], templates.points), sub.boxes) \
        if len(idx) else np.zeros(0)
    return Scores(index=idx, semantic=semantic_all[idx], appearance=appe, geometric=geo,
                  visible_ratio=vis, template=best)
