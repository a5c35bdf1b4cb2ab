"""SAM-Med3D in plain torch: 3D ViT image encoder, 3D prompt encoder, 3D mask decoder.

Written for segloop from the published architecture of uni-medical/SAM-Med3D (``vit_b_ori``:
a 768-wide, 12-block ViT over 16³ patches of a 128³ volume, window attention of 14³ with
global attention in blocks 2, 5, 8, 11, decomposed relative positions; a 384-wide two-way
transformer decoder with four mask tokens; point prompts only). Parameter names are
segloop's own; :mod:`segloop.engines.sammed3d.convert` maps the official names onto them.
The parts live in ``config`` (hyper-parameters), ``encoder``, ``decoder`` and ``layers``.

Tensor contract: images ``(B, 1, S, S, S)`` float32, z-normalised, axes = the patch's array
axes (segloop: canonical x, y, z at 1.5 mm); points ``(B, N, 3)`` in voxel indices of that
patch, in the same axis order; labels ``(B, N)`` int64 (1 positive, 0 negative, -1 padding);
low-resolution logits ``(B, 1, S/4, S/4, S/4)``. Numerics follow the official code, including
its quirks (the dense positional grid swaps its first two axes, window attention attends over
the zero padding of an 8³ grid padded to 14³), because the released weights were trained so.

Imports torch only; must not import the engine session, the CLI, FastAPI or Celery.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segloop.engines.sammed3d.config import SamMed3DConfig
from segloop.engines.sammed3d.decoder import MaskDecoder, PromptEncoder
from segloop.engines.sammed3d.encoder import ImageEncoder

__all__ = ["SamMed3D", "SamMed3DConfig"]


class SamMed3D(nn.Module):
    """The whole model; ``encode`` once per patch, ``decode`` once per click."""

    def __init__(self, cfg: SamMed3DConfig | None = None) -> None:
        super().__init__()
        self.config = cfg or SamMed3DConfig()
        self.image_encoder = ImageEncoder(self.config)
        self.prompt_encoder = PromptEncoder(self.config)
        self.mask_decoder = MaskDecoder(self.config)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, 1, S, S, S)`` z-normalised patch -> ``(B, D, g, g, g)`` embedding."""
        res: torch.Tensor = self.image_encoder(image)
        return res

    def decode(self, embedding: torch.Tensor, points: torch.Tensor, labels: torch.Tensor,
               mask_logits: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Single-mask output (the first mask token, as the official inference): low-res logits
        ``(B, 1, 4g, 4g, 4g)`` and IoU estimate ``(B, 1)``. ``mask_logits``: the previous
        low-res logits (None: no mask prompt; the official inference passes zeros at click 1)."""
        sparse, dense = self.prompt_encoder(points, labels, mask_logits)
        masks, iou = self.mask_decoder(embedding, self.prompt_encoder.dense_pe(), sparse, dense)
        return masks[:, :1], iou[:, :1]

    def upscale(self, low_res: torch.Tensor) -> torch.Tensor:
        """Low-res logits -> ``(B, 1, S, S, S)`` logits (trilinear, as the official inference)."""
        s = self.config.image_size
        return F.interpolate(low_res, size=(s, s, s), mode="trilinear", align_corners=False)
