"""SAM 2.1 / MedSAM2 on 2D images: the image-predictor path of the same weights (no memory).

:class:`Sam2ImagePredictor` loads ``transformers``' ``Sam2Model`` (the image model) from the
converted video checkpoint: its tensors are exactly a subset of the video model's (the memory
parts are left out), and every one of them must be present with its shape (strict on the image
part). As SAM 2's ``SAM2ImagePredictor``: the image is made RGB, scaled to [0, 1], resized to
the model size (bilinear, antialiased: torchvision's ``Resize`` on tensors) and normalised with
the ImageNet mean and std; the no-memory embedding is added to the coarsest features;
points and box are given in model pixels (``x * S / W``, ``y * S / H``); a single point
without a box asks for three masks and the one with the highest predicted IoU is kept (the
choice SAM 2's demos make); the low-resolution logits are upsampled (bilinear) to the image
and thresholded at 0. Imports torch; must not import FastAPI, Celery or the CLI.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from segloop.engines.sam2.preprocess import IMAGENET_MEAN, IMAGENET_STD
from segloop.errors import ModelNotAvailableError
from segloop.types import BoolArray, Prompts

__all__ = ["ImageEmbedding", "Sam2ImagePredictor"]


@dataclass(frozen=True)
class ImageEmbedding:
    """Sam2Model's multi-scale image features and the image's ``(height, width)``."""

    features: list[torch.Tensor]
    height: int
    width: int


@dataclass
class Sam2ImagePredictor:
    """A loaded ``Sam2Model`` (image predictor) at ``image_size`` px."""

    model: Any
    device: torch.device
    image_size: int
    lock: threading.RLock = field(default_factory=threading.RLock)

    @classmethod
    def load(cls, model_name: str, device: str = "cpu") -> Sam2ImagePredictor:
        """Build the image model of registry model ``model_name`` from its cached weights."""
        from safetensors.torch import load_file
        from transformers import Sam2Config, Sam2Model, Sam2VideoConfig

        from segloop.models.loader import ensure_converted

        d = ensure_converted(model_name)
        vc: Any = Sam2VideoConfig.from_json_file(str(d / "config.json"))
        cfg = Sam2Config(vision_config=vc.vision_config.to_dict(),
                         prompt_encoder_config=vc.prompt_encoder_config.to_dict(),
                         mask_decoder_config=vc.mask_decoder_config.to_dict())
        with torch.device(device):
            model = Sam2Model(cfg)
        sd = load_file(str(d / "model.safetensors"), device=str(device))
        want = model.state_dict()
        missing = [k for k in want if k not in sd or tuple(sd[k].shape) != tuple(want[k].shape)]
        if missing:
            raise ModelNotAvailableError(
                f"cached weights of {model_name} lack {len(missing)} image-model tensor(s)"
                f" ({missing[:3]}); run `segloop models remove {model_name}` and import it again"
            )
        model.load_state_dict({k: sd[k] for k in want}, strict=True)
        size = int(vc.image_size[0] if isinstance(vc.image_size, list | tuple) else vc.image_size)
        return cls(model=model.eval(), device=torch.device(device), image_size=size)

    def encode(self, pixels: npt.NDArray[np.uint8]) -> ImageEmbedding:
        """Embed ``(H, W)`` or ``(H, W, 3)`` uint8 pixels."""
        rgb = np.repeat(pixels[:, :, None], 3, axis=-1) if pixels.ndim == 2 else pixels
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255.0
        s = self.image_size
        x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        mean = torch.from_numpy(IMAGENET_MEAN)[None, :, None, None]
        std = torch.from_numpy(IMAGENET_STD)[None, :, None, None]
        x = ((x - mean) / std).to(self.device)
        with self.lock, torch.inference_mode():
            feats = self.model.get_image_embeddings(x)
        return ImageEmbedding(features=list(feats), height=int(pixels.shape[0]),
                              width=int(pixels.shape[1]))

    def predict(self, emb: ImageEmbedding, prompts: Prompts) -> tuple[BoolArray, float]:
        """The ``(H, W)`` mask for prompts in image pixels (x = column) and its predicted IoU."""
        h, w, s = emb.height, emb.width, self.image_size
        scale = np.array([s / w, s / h])
        kwargs: dict[str, torch.Tensor] = {}
        if prompts.points.shape[0]:
            pts = prompts.points.astype(np.float64) * scale
            kwargs["input_points"] = torch.as_tensor(pts, dtype=torch.float32, device=self.device)[None, None]
            kwargs["input_labels"] = torch.as_tensor(prompts.labels, dtype=torch.int32,
                                                     device=self.device)[None, None]
        if prompts.box is not None:
            box = np.asarray(prompts.box, dtype=np.float64) * np.tile(scale, 2)
            kwargs["input_boxes"] = torch.as_tensor(box, dtype=torch.float32, device=self.device)[None, None]
        multimask = prompts.box is None and prompts.points.shape[0] == 1
        with self.lock, torch.inference_mode():
            out = self.model(image_embeddings=emb.features, multimask_output=multimask, **kwargs)
        logits = out.pred_masks[0, 0].float()  # (K, s/4, s/4)
        scores = out.iou_scores[0, 0].float()  # (K,)
        k = int(torch.argmax(scores)) if multimask else 0
        up = F.interpolate(logits[k][None, None], size=(h, w), mode="bilinear", align_corners=False)
        return up[0, 0].cpu().numpy() > 0.0, float(scores[k])
