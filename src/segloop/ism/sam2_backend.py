"""The ``sam2`` ISM backend: SAM 2.1 automatic-mask proposals and DINOv2 ViT-L/14 descriptors.

SAM-6D itself only ships SAM and FastSAM; this backend swaps SAM 2.1 (``transformers``'
``Sam2Model``, through segloop's ``Sam2ImagePredictor`` and the registry's ``sam2.1-*`` weights)
into the same point-grid generator (:mod:`segloop.ism.amg`): the image resized to width 640, a
32×32 grid in batches of 64, three masks per point, upsampled (bilinear) to the image, predicted
IoU > 0.8 (SAM 2's own ``SAM2AutomaticMaskGenerator`` default), stability score ≥ the request's
``stability_score_thresh``, box NMS 0.7. Descriptors and scores are the ``sam`` backend's.
Imports torch and transformers; imported only when a request asks for ``sam2``.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from segloop.engines.sam2.image2d import Sam2ImagePredictor

from .amg import AmgConfig, Decoder
from .amg_backend import AmgDinoBackend

__all__ = ["SAM2_AMG", "Sam2Backend", "load_sam2_backend"]

log = logging.getLogger("segloop.ism.sam2")

#: SAM 2's automatic mask generator defaults (pred_iou_thresh 0.8), SAM-6D's width and batches
SAM2_AMG = AmgConfig(pred_iou_thresh=0.8)


class Sam2Backend(AmgDinoBackend):
    """SAM 2 proposals + DINOv2 descriptors (models already loaded)."""

    name: ClassVar[str] = "sam2"

    def __init__(self, predictor: Sam2ImagePredictor, dino: Any, config: AmgConfig | None = None) -> None:
        super().__init__(dino, config or SAM2_AMG)
        self.predictor = predictor

    def decoder(self, rgb: np.ndarray) -> Decoder:
        """SAM 2's image features once, then its mask decoder per batch of points, logits
        upsampled (bilinear) from ``image_size / 4`` to the image."""
        h, w = rgb.shape[:2]
        emb = self.predictor.encode(rgb)
        s = self.predictor.image_size
        dev = self.predictor.device

        def decode(pts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            p = torch.from_numpy(pts * np.array([s / w, s / h])).float()[None, :, None, :].to(dev)
            lab = torch.ones(p.shape[:3], dtype=torch.int32, device=dev)
            with self.predictor.lock:
                out = self.predictor.model(image_embeddings=emb.features, input_points=p, input_labels=lab,
                                           multimask_output=True)
            low = out.pred_masks[0].flatten(0, 1)[:, None].float()  # (B*3, 1, s/4, s/4)
            logits = F.interpolate(low, (h, w), mode="bilinear", align_corners=False)[:, 0]
            return logits, out.iou_scores[0].flatten().float()

        return decode


def load_sam2_backend(checkpoints_dir: Path | None, sam2_name: str = "sam2.1-large",
                      dino_name: str = "dinov2-vitl14", config: AmgConfig | None = None) -> Sam2Backend:
    """Load SAM 2.1 (registry name, e.g. ``sam2.1-large``: `segloop models pull sam2.1-large`) and
    DINOv2 (as the ``sam`` backend finds it)."""
    from transformers import Dinov2Config, Dinov2Model

    from .sam_backend import load_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    predictor = Sam2ImagePredictor.load(sam2_name, device=device)
    dino = load_model(dino_name, checkpoints_dir, Dinov2Model, Dinov2Config).to(device)
    log.info("loaded %s and %s on %s", sam2_name, dino_name, device)
    return Sam2Backend(predictor, dino, config)
