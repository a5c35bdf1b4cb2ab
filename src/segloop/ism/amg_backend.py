"""The common part of the SAM-family ISM backends: point-grid proposals + DINOv2 descriptors.

``sam`` (SAM v1) and ``sam2`` (SAM 2.1) differ only in how one batch of grid points is decoded
into mask logits. :class:`AmgDinoBackend` holds the rest once: the point-grid generator
(:func:`segloop.ism.amg.generate`) on the image resized to SAM-6D's width 640
(:func:`segloop.ism.amg.at_width`), and the DINOv2 descriptors of templates and proposals
(:class:`segloop.ism.dinov2_descriptors.DinoDescriber`). A subclass implements
:meth:`AmgDinoBackend.decoder`: embed the image once, return the batch decoder.
Imports torch; imported only when a SAM-family backend is loaded.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .amg import AmgConfig, Decoder, at_width, generate
from .dinov2_descriptors import DinoDescriber
from .types import Descriptors, Proposals, Scene, Templates

__all__ = ["AmgDinoBackend"]


class AmgDinoBackend:
    """Proposals from a SAM-family model's automatic masks, descriptors from DINOv2."""

    def __init__(self, dino: Any, config: AmgConfig) -> None:
        self.config = config
        self.describer = DinoDescriber(dino, batch=config.descriptor_batch)

    def decoder(self, rgb: np.ndarray) -> Decoder:
        """Embed the (H, W, 3) uint8 image; return the function that decodes a batch of points."""
        raise NotImplementedError

    @torch.no_grad()
    def generate(self, rgb: np.ndarray, stability_score_thresh: float) -> Proposals:
        """The automatic masks of an (H, W, 3) uint8 image: bool masks and inclusive xyxy boxes."""
        h, w = rgb.shape[:2]
        return generate((h, w), self.decoder(rgb), self.config, stability_score_thresh)

    def proposals(self, scene: Scene, stability_score_thresh: float) -> Proposals:
        """SAM-6D's proposals: the generator on the image resized to width 640, masks resized back."""
        return at_width(scene.rgb, self.config.width, lambda im: self.generate(im, stability_score_thresh))

    def describe_templates(self, templates: Templates) -> Descriptors:
        """DINOv2 descriptors of the masked templates (see ``dinov2_descriptors``)."""
        return self.describer.describe_templates(templates)

    def describe_proposals(self, scene: Scene, proposals: Proposals) -> Descriptors:
        """DINOv2 descriptors of each proposal's masked crop."""
        return self.describer.describe_proposals(scene, proposals)
