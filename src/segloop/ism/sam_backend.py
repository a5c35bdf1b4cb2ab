"""The ``sam`` ISM backend: SAM automatic-mask proposals and DINOv2 ViT-L/14 descriptors.

Proposals follow segment-anything's ``SamAutomaticMaskGenerator`` as SAM-6D configures it (one
crop, a 32×32 point grid in batches of 64, three masks per point, predicted IoU > 0.88, stability
score — the IoU of the mask logits thresholded at ±1 — ≥ ``stability_score_thresh``, box NMS at
0.7 scored by predicted IoU), on the image resized to width 640 (SAM-6D's ``segmentor_width_size``).
The generator is written here on top of ``transformers``' ``SamModel`` (image embedding once, then
the prompt encoder + mask decoder per batch of points).

Descriptors: SAM-6D's ``CustomDINOv2`` (``segloop.ism.dinov2_descriptors``).

Weights, first found: ``ISM_CHECKPOINTS_DIR/<name>/`` (``config.json`` + ``model.safetensors``);
SAM-6D's own checkpoint folder as ``ISM_CHECKPOINTS_DIR`` (``segment-anything/sam_vit_h_4b8939.pth``
or ``sam_vit_b_01ec64.pth``, ``dinov2/dinov2_vitl14_pretrain.pth``: converted on load); segloop's
model cache: ``segloop models pull NAME`` (transformers' ``model.safetensors``), ``segloop models
import FOLDER --as NAME`` (a transformers folder), or ``segloop models import FILE --as NAME`` with
the original-layout checkpoint (``sam_vit_h_4b8939.pth``, ``sam_vit_b_01ec64.pth``,
``dinov2_vitl14_pretrain.pth``: converted on load, as SAM-6D's folder is).
Imports torch and transformers; imported only when a request asks for ``sam``.
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
from PIL import Image

from segloop.errors import InputError, ModelNotAvailableError

from .amg import AmgConfig, Decoder, point_grid, stability_score
from .amg_backend import AmgDinoBackend

__all__ = ["AmgConfig", "SamBackend", "find_weights", "load_backend", "load_model", "load_named",
           "point_grid", "stability_score"]

log = logging.getLogger("segloop.ism.sam")

_SAM_MEAN = np.array([123.675, 116.28, 103.53])
_SAM_STD = np.array([58.395, 57.12, 57.375])


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
        f"weights of {name!r} not found (looked in {', '.join(map(str, cands))}): import the published "
        f"checkpoint with `segloop models import FILE.pth --as {name}` or a transformers folder with "
        f"`segloop models import FOLDER --as {name}`")


class SamBackend(AmgDinoBackend):
    """SAM proposals + DINOv2 descriptors (models already loaded, in eval mode)."""

    name: ClassVar[str] = "sam"

    def __init__(self, sam: Any, dino: Any, config: AmgConfig | None = None) -> None:
        super().__init__(dino.eval(), config or AmgConfig())
        self.sam = sam.eval()
        self.dino = dino
        self.image_size = int(sam.config.vision_config.image_size)
        self.device = next(sam.parameters()).device

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

    def decoder(self, rgb: np.ndarray) -> Decoder:
        """SAM's image embedding (longest side 1024, zero-padded), then its prompt encoder + mask
        decoder per batch of points, logits upsampled to 1024, cropped and resized to the image."""
        h, w = rgb.shape[:2]
        emb, (nh, nw) = self._embed(rgb)

        def decode(pts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            p = torch.from_numpy(pts * np.array([nw / w, nh / h])).float()[None, :, None, :].to(self.device)
            lab = torch.ones(p.shape[:3], dtype=torch.long, device=self.device)
            out = self.sam(image_embeddings=emb, input_points=p, input_labels=lab, multimask_output=True)
            low = out.pred_masks[0].flatten(0, 1)[:, None]  # (B*3, 1, 256, 256)
            up = F.interpolate(low, (self.image_size, self.image_size), mode="bilinear", align_corners=False)
            logits = F.interpolate(up[..., :nh, :nw], (h, w), mode="bilinear", align_corners=False)[:, 0]
            return logits, out.iou_scores[0].flatten()

        return decode


#: SAM-6D's checkpoint files (``Instance_Segmentation_Model/checkpoints/``) per registry name
SAM6D_FILES = {"sam-vit-h": "segment-anything/sam_vit_h_4b8939.pth",
               "sam-vit-b": "segment-anything/sam_vit_b_01ec64.pth",
               "dinov2-vitl14": "dinov2/dinov2_vitl14_pretrain.pth"}


def _to_hf(name: str, state: dict[str, Any]) -> dict[str, Any]:
    """An original-layout state dict of ``name`` (Meta's SAM or DINOv2 names) in transformers' names."""
    from segloop.models.sam_v1 import sam_original_to_hf

    from .dinov2_convert import dinov2_original_to_hf

    return dinov2_original_to_hf(state) if name.startswith("dinov2") else sam_original_to_hf(state)


def _sam6d_state(name: str, checkpoints_dir: Path | None) -> dict[str, Any] | None:
    """The state dict of ``name`` from SAM-6D's checkpoint folder, in transformers' names."""
    if checkpoints_dir is None or name not in SAM6D_FILES:
        return None
    f = Path(checkpoints_dir) / SAM6D_FILES[name]
    if not f.is_file():
        return None
    return _to_hf(name, torch.load(f, map_location="cpu", weights_only=True))


def _cached_state(name: str, path: Path) -> dict[str, Any]:
    """The state dict in segloop's cache: a pulled ``model.safetensors`` (transformers' names), or
    an imported original-layout ``torch.save`` file (``segloop models import sam_vit_h_4b8939.pth
    --as sam-vit-h``, ``dinov2_vitl14_pretrain.pth --as dinov2-vitl14``), converted on load."""
    with path.open("rb") as f:
        head = f.read(2)
    if head == b"PK" or head[:1] == b"\x80":  # torch.save's zip, or its legacy pickle
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]  # {"model": state_dict}, as training scripts save
        return _to_hf(name, state)
    from safetensors.torch import load_file

    return dict(load_file(str(path)))


def load_model(name: str, checkpoints_dir: Path | None, model_cls: Any, config_cls: Any) -> Any:
    """``model_cls`` from a transformers folder, SAM-6D's checkpoint folder or segloop's cached
    checkpoint (pulled ``model.safetensors`` or imported ``.pth``; strict keys and shapes; see the
    module docstring for the order). ModelNotAvailableError, naming the file, when the weights do
    not fit the architecture."""
    from segloop.models.store import checkpoint_path, model_config

    try:
        return model_cls.from_pretrained(find_weights(name, checkpoints_dir))
    except ModelNotAvailableError:
        state = _sam6d_state(name, checkpoints_dir)
        pulled = checkpoint_path(name)
        if state is None and not pulled.is_file():
            raise
    src = Path(checkpoints_dir or "") / SAM6D_FILES[name] if state is not None else pulled
    try:
        if state is None:
            state = _cached_state(name, pulled)
        model = model_cls(config_cls(**model_config(name)))
        model.load_state_dict(state, strict=True)
    except (InputError, ValueError, RuntimeError) as exc:  # a foreign key (converters), a missing key/shape
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()] or [type(exc).__name__]
        why = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines[0]
        raise ModelNotAvailableError(
            f"{src} does not fit {name}'s architecture ({why[:300].rstrip(':. ')}): import the checkpoint "
            f"published for {name} (`segloop models import FILE --as {name}`)") from exc
    return model


def load_named(name: str, checkpoints_dir: Path | None = None) -> Any:
    """The registry model ``name`` (``sam-vit-*``: ``SamModel``, ``dinov2-*``: ``Dinov2Model``)
    loaded as :func:`load_model` finds it; what ``segloop models import --convert`` checks."""
    from transformers import Dinov2Config, Dinov2Model, SamConfig, SamModel

    if name.startswith("dinov2"):
        return load_model(name, checkpoints_dir, Dinov2Model, Dinov2Config)
    return load_model(name, checkpoints_dir, SamModel, SamConfig)


def load_backend(checkpoints_dir: Path | None, sam_name: str = "sam-vit-h",
                 dino_name: str = "dinov2-vitl14", config: AmgConfig | None = None) -> SamBackend:
    """Load SAM and DINOv2 (see :func:`find_weights`; or pulled with `segloop models pull NAME`)."""
    sam = load_named(sam_name, checkpoints_dir)
    dino = load_named(dino_name, checkpoints_dir)
    if torch.cuda.is_available():
        sam, dino = sam.to("cuda"), dino.to("cuda")
    log.info("loaded %s and %s", sam_name, dino_name)
    return SamBackend(sam, dino, config)
