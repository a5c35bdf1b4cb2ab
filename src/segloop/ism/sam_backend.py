"""The ``sam`` ISM backend: SAM automatic-mask proposals and DINOv2 ViT-L/14 descriptors.

Proposals follow segment-anything's ``SamAutomaticMaskGenerator`` as SAM-6D configures it (one
crop, a 32×32 point grid in batches of 64, three masks per point, predicted IoU > 0.88, stability
score — the IoU of the mask logits thresholded at ±1 — ≥ ``stability_score_thresh``, box NMS at
0.7 scored by predicted IoU), on the image resized to width 640 (SAM-6D's ``segmentor_width_size``).
The generator is written here on top of ``transformers``' ``SamModel`` (image embedding once, then
the prompt encoder + mask decoder per batch of points).

Descriptors follow SAM-6D's ``CustomDINOv2``: ImageNet-normalised RGB, masked, crop-resize-padded
to 224×224; the CLS token of ``Dinov2Model``'s final layer norm is the global descriptor, the 16×16
patch tokens (zeroed where < half of the 14-px patch is inside the mask, L2-normalised) the
appearance descriptors. Templates are fed without ImageNet normalisation, as SAM-6D's
``run_inference_custom.py`` does.

Weights come from segloop's model cache (``segloop models import FOLDER --as sam-vit-h``: a
``transformers`` folder) or ``ISM_CHECKPOINTS_DIR/<name>/`` with ``config.json`` +
``model.safetensors``. Imports torch and transformers; imported only when a request asks for ``sam``.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from segloop.errors import ModelNotAvailableError

from .crop import crop_resize_pad, mask_box
from .scoring import nms
from .types import Descriptors, Proposals, Scene, Templates

__all__ = ["AmgConfig", "SamBackend", "find_weights", "load_backend", "point_grid", "stability_score"]

log = logging.getLogger("segloop.ism.sam")

_SAM_MEAN = np.array([123.675, 116.28, 103.53])
_SAM_STD = np.array([58.395, 57.12, 57.375])
_IMNET_MEAN = np.array([0.485, 0.456, 0.406])
_IMNET_STD = np.array([0.229, 0.224, 0.225])


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


def find_weights(name: str, checkpoints_dir: Path | None) -> Path:
    """The ``transformers`` folder of ``name``: ISM_CHECKPOINTS_DIR/<name>, else segloop's cache
    (``segloop models import FOLDER --as NAME``)."""
    cands = []
    if checkpoints_dir is not None:
        cands.append(Path(checkpoints_dir) / name)
    from segloop.models.store import hf_dir

    cands.append(hf_dir(name))
    for c in cands:
        if (c / "config.json").is_file() and (c / "model.safetensors").is_file():
            return c
    raise ModelNotAvailableError(
        f"weights of {name!r} not found (looked in {', '.join(map(str, cands))}): import a transformers "
        f"folder with `segloop models import FOLDER --as {name}`")


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


class SamBackend:
    """SAM proposals + DINOv2 descriptors (models already loaded, in eval mode)."""

    name: ClassVar[str] = "sam"

    def __init__(self, sam: Any, dino: Any, config: AmgConfig | None = None) -> None:
        self.sam = sam.eval()
        self.dino = dino.eval()
        self.config = config or AmgConfig()
        self.image_size = int(sam.config.vision_config.image_size)
        self.device = next(sam.parameters()).device

    # ------------------------------------------------------------------ proposals
    def _embed(self, rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        h, w = rgb.shape[:2]
        s = self.image_size / max(h, w)
        nh, nw = int(h * s + 0.5), int(w * s + 0.5)
        img = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.Resampling.BILINEAR), dtype=np.float64)
        x = np.zeros((self.image_size, self.image_size, 3))
        x[:nh, :nw] = (img - _SAM_MEAN) / _SAM_STD
        pix = torch.from_numpy(x.transpose(2, 0, 1)[None]).float().to(self.device)
        with torch.no_grad():
            return self.sam.get_image_embeddings(pix), (nh, nw)

    @torch.no_grad()
    def generate(self, rgb: np.ndarray, stability_score_thresh: float) -> Proposals:
        """SAM's automatic masks of an (H, W, 3) uint8 image: bool masks and inclusive xyxy boxes."""
        c = self.config
        h, w = rgb.shape[:2]
        emb, (nh, nw) = self._embed(rgb)
        pts = point_grid(c.points_per_side) * np.array([w, h])
        pts_in = pts * np.array([nw / w, nh / h])
        masks, scores = [], []
        for s in range(0, len(pts), c.points_per_batch):
            p = torch.from_numpy(pts_in[s:s + c.points_per_batch]).float()[None, :, None, :].to(self.device)
            lab = torch.ones(p.shape[:3], dtype=torch.long, device=self.device)
            out = self.sam(image_embeddings=emb, input_points=p, input_labels=lab, multimask_output=True)
            low = out.pred_masks[0].flatten(0, 1)[:, None]  # (B*3, 1, 256, 256)
            iou = out.iou_scores[0].flatten()
            up = F.interpolate(low, (self.image_size, self.image_size), mode="bilinear", align_corners=False)
            logits = F.interpolate(up[..., :nh, :nw], (h, w), mode="bilinear", align_corners=False)[:, 0]
            keep = iou > c.pred_iou_thresh
            logits, iou = logits[keep], iou[keep]
            keep = stability_score(logits, c.stability_offset) >= stability_score_thresh
            masks.append((logits[keep] > 0).cpu().numpy())
            scores.append(iou[keep].cpu().numpy())
        m = np.concatenate(masks) if masks else np.zeros((0, h, w), dtype=bool)
        sc = np.concatenate(scores) if scores else np.zeros(0)
        nonempty = m.reshape(len(m), h * w).any(1)  # (-1 cannot be inferred when empty)
        m, sc = m[nonempty], sc[nonempty]
        if not len(m):
            return Proposals(masks=np.zeros((0, h, w), dtype=bool), boxes=np.zeros((0, 4)))
        boxes = np.array([mask_box(x) for x in m])
        keep_idx = nms(boxes, sc, c.box_nms_thresh)
        return Proposals(masks=m[keep_idx], boxes=boxes[keep_idx])

    def proposals(self, scene: Scene, stability_score_thresh: float) -> Proposals:
        """SAM-6D's proposals: SAM on the image resized to width 640, masks resized back."""
        h, w = scene.rgb.shape[:2]
        cw = self.config.width
        if w == cw:
            return self.generate(scene.rgb, stability_score_thresh)
        ch = int(cw * h / w)
        small = np.asarray(Image.fromarray(scene.rgb).resize((cw, ch), Image.Resampling.BILINEAR))
        p = self.generate(small, stability_score_thresh)
        if not len(p):
            return Proposals(masks=np.zeros((0, h, w), dtype=bool), boxes=np.zeros((0, 4)))
        t = F.interpolate(torch.from_numpy(p.masks[:, None].astype(np.float32)), (h, w), mode="bilinear",
                          align_corners=False)[:, 0].numpy() > 0.5
        keep = t.reshape(len(t), -1).any(1)
        t = t[keep]
        return Proposals(masks=t, boxes=np.array([mask_box(x) for x in t]).reshape(-1, 4))

    # ---------------------------------------------------------------- descriptors
    @torch.no_grad()
    def _describe(self, crops: list[np.ndarray], masks: list[np.ndarray], normalize: bool) -> Descriptors:
        glob, pats = [], []
        bs = self.config.descriptor_batch
        for s in range(0, len(crops), bs):
            x = np.stack([((c / 255.0 - _IMNET_MEAN) / _IMNET_STD if normalize else c / 255.0) * m[..., None]
                          for c, m in zip(crops[s:s + bs], masks[s:s + bs], strict=True)])
            pix = torch.from_numpy(x.transpose(0, 3, 1, 2)).float().to(self.device)
            hs = self.dino(pixel_values=pix).last_hidden_state.cpu()
            mk = torch.from_numpy(np.stack(masks[s:s + bs]).astype(np.float32))[:, None]
            valid = F.avg_pool2d(mk, 14, 14).flatten(1) > 0.5  # (b, 256)
            patches = hs[:, 1:] * valid[..., None]
            glob.append(hs[:, 0].numpy())
            pats.append(F.normalize(patches, dim=-1).numpy())
        if not glob:
            d = int(self.dino.config.hidden_size)
            return Descriptors(global_=np.zeros((0, d)), patches=np.zeros((0, 256, d)))
        return Descriptors(global_=np.concatenate(glob), patches=np.concatenate(pats))

    def describe_templates(self, templates: Templates) -> Descriptors:
        """DINOv2 descriptors of the masked templates (crop of the mask's box).

        As SAM-6D's ``run_inference_custom.py``: templates enter DINOv2 as RGB in [0, 1] times the
        mask, *without* the ImageNet normalisation that proposals get."""
        crops, masks = [], []
        for rgb, m in zip(templates.rgb, templates.masks, strict=True):
            box = mask_box(m)
            crops.append(crop_resize_pad(rgb, box).astype(np.float64))
            masks.append(crop_resize_pad(m, box))
        return self._describe(crops, masks, normalize=False)

    def describe_proposals(self, scene: Scene, proposals: Proposals) -> Descriptors:
        """DINOv2 descriptors of each proposal's masked crop."""
        crops, masks = [], []
        for m, box in zip(proposals.masks, proposals.boxes, strict=True):
            crops.append(crop_resize_pad(scene.rgb, box).astype(np.float64))
            masks.append(crop_resize_pad(m, box))
        return self._describe(crops, masks, normalize=True)


def _load(name: str, checkpoints_dir: Path | None, model_cls: Any, config_cls: Any) -> Any:
    """``model_cls`` from a transformers folder, else from a pulled ``model.safetensors`` (strict keys)."""
    from segloop.models.registry import get_spec
    from segloop.models.store import checkpoint_path

    try:
        return model_cls.from_pretrained(find_weights(name, checkpoints_dir))
    except ModelNotAvailableError:
        pulled = checkpoint_path(name)
        if not pulled.is_file():
            raise
    from safetensors.torch import load_file

    model = model_cls(config_cls(**get_spec(name).config))
    model.load_state_dict(load_file(str(pulled)), strict=True)
    return model


def load_backend(checkpoints_dir: Path | None, sam_name: str = "sam-vit-h",
                 dino_name: str = "dinov2-vitl14", config: AmgConfig | None = None) -> SamBackend:
    """Load SAM and DINOv2 (see :func:`find_weights`; or pulled with `segloop models pull NAME`)."""
    from transformers import Dinov2Config, Dinov2Model, SamConfig, SamModel

    sam = _load(sam_name, checkpoints_dir, SamModel, SamConfig)
    dino = _load(dino_name, checkpoints_dir, Dinov2Model, Dinov2Config)
    if torch.cuda.is_available():
        sam, dino = sam.to("cuda"), dino.to("cuda")
    log.info("loaded %s and %s", sam_name, dino_name)
    return SamBackend(sam, dino, config)
