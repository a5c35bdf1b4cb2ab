"""Records shared by the ISM pipeline: proposals, descriptors, templates, detections, timings.

Array contracts: images are (H, W[, C]) with x = column, y = row from the top-left; boxes are
float (x0, y0, x1, y1) in pixels (SAM-6D's xyxy); depth is float millimetres (0 = missing).
Imports numpy only.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

__all__ = ["BackendName", "Descriptors", "Detection", "Proposals", "Scene", "Templates", "Timings"]


class BackendName(StrEnum):
    """Which proposal + descriptor models run (the request's ``segmentor_model``)."""

    CLASSIC = "classic"  # weights-free: depth/colour segmentation + colour/shape descriptors
    SAM = "sam"  # SAM automatic masks + DINOv2 ViT-L/14 (needs weights)
    SAM2 = "sam2"  # SAM 2.1 automatic masks + DINOv2 ViT-L/14 (needs weights)
    FASTSAM = "fastsam"  # accepted name; refused (needs ultralytics → torchvision)


@dataclass(frozen=True)
class Scene:
    """One RGB-D frame: ``rgb`` (H, W, 3) uint8, ``depth_mm`` (H, W) float32 mm, ``K`` 3×3 pixels."""

    rgb: np.ndarray
    depth_mm: np.ndarray
    K: np.ndarray


@dataclass(frozen=True)
class Proposals:
    """P candidate masks: ``masks`` (P, H, W) bool, ``boxes`` (P, 4) float xyxy (inclusive pixels)."""

    masks: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.masks)

    def subset(self, idx: np.ndarray) -> Proposals:
        """The proposals at ``idx`` (indices or a boolean mask)."""
        return Proposals(masks=self.masks[idx], boxes=self.boxes[idx])


@dataclass(frozen=True)
class Descriptors:
    """``global_`` (N, D) image-level descriptors (SAM-6D: DINOv2 CLS tokens) and ``patches``
    (N, Np, C) L2-normalised patch descriptors, all-zero rows for patches outside the mask."""

    global_: np.ndarray
    patches: np.ndarray


@dataclass(frozen=True)
class Templates:
    """T rendered views of one object: ``rgb`` (T, S, S, 3) uint8, ``masks`` (T, S, S) bool,
    ``rotations`` (T, 3, 3) object-to-camera rotations of the views, ``points`` (M, 3) CAD surface
    points in mm (SAM-6D: 2048), ``source`` the template folder."""

    rgb: np.ndarray
    masks: np.ndarray
    rotations: np.ndarray
    points: np.ndarray
    source: str


@dataclass(frozen=True)
class Detection:
    """One instance: ``mask`` (H, W) bool, ``box`` xyxy float, ``score`` in [0, 1], scores' parts."""

    mask: np.ndarray
    box: tuple[float, float, float, float]
    score: float
    semantic: float
    appearance: float
    geometric: float
    visible_ratio: float
    template: int


@dataclass
class Timings:
    """Seconds spent per stage of one request."""

    proposals: float = 0.0
    descriptors: float = 0.0
    scoring: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        """Sum of the stages."""
        return self.proposals + self.descriptors + self.scoring
