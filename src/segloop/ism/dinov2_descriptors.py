"""SAM-6D's DINOv2 descriptors (``model/dinov2.py`` ``CustomDINOv2``) on ``transformers``' Dinov2Model.

Shared by the SAM and SAM 2 backends. Per proposal / template, as SAM-6D computes them:

* crop: the box cut with an exclusive end (``image[y0:y1, x0:x1]``; SAM's inclusive proposal boxes
  therefore lose their last row and column, as in SAM-6D; templates use PIL's ``getbbox``, which
  is exclusive), scaled by ``224 / longest side`` with nearest-neighbour sampling (``F.interpolate``'s
  default), zero-padded to 224² (top/left get the floor of half the padding);
* pixels: proposals ImageNet-normalised then masked; templates in [0, 1] times the mask and *not*
  normalised (SAM-6D's ``run_inference_custom.py``);
* global descriptor: the final-norm CLS token; appearance descriptors: the 16×16 final-norm patch
  tokens, zeroed where ≤ half of the 14-px patch is in the mask, L2-normalised;
* position embeddings resampled from 37² to 16² the way Meta's DINOv2 code does (bicubic with
  ``scale_factor = (16 + 0.1) / 37``), which ``transformers`` does with ``size=16`` instead: without
  this the descriptors differ by ~1e-2 (see benchmarks/parity_ism.py).

Imports torch; imported only by the backends that need DINOv2.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import math
import types
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .types import Descriptors, Proposals, Scene, Templates

__all__ = ["DinoDescriber", "crop_scale_pad", "use_meta_position_interpolation"]

_IMNET_MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
_IMNET_STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def use_meta_position_interpolation(dino: Any, offset: float = 0.1) -> Any:
    """Make ``dino`` (a transformers Dinov2Model) resample its position embeddings like Meta's
    DINOv2 (``scale_factor`` with a 0.1 offset) instead of to an exact size; returns ``dino``."""
    emb = dino.embeddings

    def interpolate(self: Any, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
        n_pos = self.position_embeddings.shape[1] - 1
        if embeddings.shape[1] - 1 == n_pos and height == width:
            return self.position_embeddings  # type: ignore[no-any-return]
        pos = self.position_embeddings.float()
        dim = embeddings.shape[-1]
        side = math.sqrt(n_pos)
        p = self.patch_embeddings.patch_size[0]
        grid = pos[:, 1:].reshape(1, int(side), int(side), dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((height // p + offset) / side, (width // p + offset) / side),
                             mode="bicubic", antialias=False)
        grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat((pos[:, :1], grid), dim=1).to(embeddings.dtype)

    emb.interpolate_pos_encoding = types.MethodType(interpolate, emb)
    return dino


def crop_scale_pad(image: torch.Tensor, box: tuple[int, int, int, int], size: int = 224) -> torch.Tensor:
    """(C, H, W) → (C, size, size): ``image[:, y0:y1, x0:x1]`` scaled (nearest) so its longest side
    is ``size``, zero-padded to a square (SAM-6D's CropResizePad)."""
    x0, y0, x1, y1 = box
    longest = max(x1 - x0, y1 - y0, 1)
    scale = (size / torch.tensor([longest]))[0].item()  # float32, as SAM-6D computes it
    crop = image[:, y0:y1, x0:x1]
    if crop.shape[1] == 0 or crop.shape[2] == 0:
        return torch.zeros((image.shape[0], size, size), dtype=image.dtype)
    crop = F.interpolate(crop[None], scale_factor=scale)[0]
    h, w = crop.shape[1:]
    top, left = max((size - h) // 2, 0), max((size - w) // 2, 0)
    return F.pad(crop, (left, size - w - left, top, size - h - top))


class DinoDescriber:
    """Global + patch descriptors of templates and proposals with one DINOv2 model (eval mode)."""

    def __init__(self, dino: Any, batch: int = 16, patch: int = 14, valid_thresh: float = 0.5) -> None:
        self.dino = use_meta_position_interpolation(dino.eval())
        self.batch = batch
        self.patch = patch
        self.valid_thresh = valid_thresh
        self.device = next(dino.parameters()).device

    @torch.no_grad()
    def describe(self, images: torch.Tensor, masks: torch.Tensor) -> Descriptors:
        """(N, 3, 224, 224) model inputs and (N, 224, 224) float masks → descriptors."""
        glob, pats = [], []
        for s in range(0, len(images), self.batch):
            x = images[s:s + self.batch].to(self.device)
            hs = self.dino(pixel_values=x).last_hidden_state.float().cpu()
            cover = F.avg_pool2d(masks[s:s + self.batch, None], self.patch, self.patch).flatten(1)
            valid = cover > self.valid_thresh
            glob.append(hs[:, 0])
            pats.append(F.normalize(hs[:, 1:] * valid[..., None], dim=-1))
        if not glob:
            d = int(self.dino.config.hidden_size)
            return Descriptors(global_=np.zeros((0, d), np.float32),
                               patches=np.zeros((0, 256, d), np.float32))
        return Descriptors(global_=torch.cat(glob).numpy(), patches=torch.cat(pats).numpy())

    def describe_templates(self, templates: Templates) -> Descriptors:
        """Templates: RGB in [0, 1] times the mask (not ImageNet-normalised), box = PIL getbbox."""
        imgs, masks = [], []
        for rgb, m in zip(templates.rgb, templates.masks, strict=True):
            ys, xs = np.nonzero(m)
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            mt = torch.from_numpy(m.astype(np.float32))
            img = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255 * mt
            imgs.append(crop_scale_pad(img, box))
            masks.append(crop_scale_pad(mt[None], box)[0])
        return self.describe(torch.stack(imgs), torch.stack(masks))

    def describe_proposals(self, scene: Scene, proposals: Proposals) -> Descriptors:
        """Proposals: ImageNet-normalised image times the mask; box = the proposal's integer box."""
        full = (torch.from_numpy(np.ascontiguousarray(scene.rgb)).permute(2, 0, 1).float().div(255)
                - _IMNET_MEAN) / _IMNET_STD
        imgs, masks = [], []
        for m, b in zip(proposals.masks, proposals.boxes, strict=True):
            box = (int(b[0]), int(b[1]), int(b[2]), int(b[3]))
            mt = torch.from_numpy(m.astype(np.float32))
            imgs.append(crop_scale_pad(full * mt, box))
            masks.append(crop_scale_pad(mt[None], box)[0])
        if not imgs:
            return self.describe(torch.zeros((0, 3, 224, 224)), torch.zeros((0, 224, 224)))
        return self.describe(torch.stack(imgs), torch.stack(masks))
