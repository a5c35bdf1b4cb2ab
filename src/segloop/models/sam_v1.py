"""SAM v1 checkpoints (MedSAM's ``medsam_vit_b.pth``, Meta's ``sam_vit_b``) for
``transformers``' ``SamModel``: configurations, name mapping, conversion and loading.

Original checkpoints are plain state dicts named after the ``segment_anything`` modules
(``image_encoder.blocks.0.norm1.weight``...; ViT-B has 314 tensors). :func:`sam_original_to_hf`
renames them into ``SamModel`` names (315: the prompt encoder's Gaussian matrix is also the
model's shared image embedding); :func:`sam_hf_to_original` is its inverse (to write weights
that MedSAM's own code loads). The mapping depends on names only, never on sizes, so it also
serves the tiny test configurations. A checkpoint already in ``SamModel`` names (HF
``flaviagiammarino/medsam-vit-base``'s ``pytorch_model.bin``) passes through unchanged.

The config functions are torch-free (the registry calls them); the rest imports torch and
transformers inside the functions. Must not import the engines, the API or the CLI.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from segloop.errors import ModelNotAvailableError
from segloop.models.configs import sam_vit_b_config, tiny_sam_config

__all__ = [
    "build_sam_model",
    "convert_sam_checkpoint",
    "load_sam_model",
    "sam_hf_to_original",
    "sam_model_from_file",
    "sam_original_to_hf",
    "sam_vit_b_config",
    "tiny_sam_config",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- name mapping

_NECK = {"0": "conv1", "1": "layer_norm1", "2": "conv2", "3": "layer_norm2"}
_DOWNSCALE = {"0": "conv1", "1": "layer_norm1", "3": "conv2", "4": "layer_norm2", "6": "conv3"}
_UPSCALE = {"0": "upscale_conv1", "1": "upscale_layer_norm", "3": "upscale_conv2"}
_PE_ORIG = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
_PE_HF = ("prompt_encoder.shared_embedding.positional_embedding",
          "shared_image_embedding.positional_embedding")
_MLP = re.compile(r"^(mask_decoder\.iou_prediction_head|mask_decoder\.output_hypernetworks_mlps\.\d+)"
                  r"\.layers\.(\d+)\.(weight|bias)$")
_HF_MLP = re.compile(r"^(mask_decoder\.iou_prediction_head|mask_decoder\.output_hypernetworks_mlps\.\d+)"
                     r"\.(proj_in|proj_out|layers\.(\d+))\.(weight|bias)$")


def _is_hf(keys: list[str]) -> bool:
    return any(k.startswith("vision_encoder.") for k in keys)


def sam_original_to_hf(state: Mapping[str, Any]) -> dict[str, Any]:
    """Rename a ``segment_anything`` state dict into ``SamModel`` names (tensors not copied).

    A state dict already in ``SamModel`` names is returned as is. ValueError on a key that
    belongs to neither layout.
    """
    keys = list(state)
    if _is_hf(keys):
        out_hf = dict(state)
        for a, b in (_PE_HF, _PE_HF[::-1]):  # a tied copy may be left out of a saved file
            if a in out_hf and b not in out_hf:
                out_hf[b] = out_hf[a]
        return out_hf
    depth: dict[str, int] = {}
    for k in keys:
        m = _MLP.match(k)
        if m:
            depth[m.group(1)] = max(depth.get(m.group(1), 0), int(m.group(2)) + 1)
    out: dict[str, Any] = {}
    for k, v in state.items():
        if k == _PE_ORIG:
            for name in _PE_HF:
                out[name] = v
            continue
        if not k.startswith(("image_encoder.", "prompt_encoder.", "mask_decoder.")):
            raise ValueError(f"unexpected key {k!r} in a SAM checkpoint")
        o = k
        m = _MLP.match(o)
        if m:
            i, n = int(m.group(2)), depth[m.group(1)]
            part = "proj_in" if i == 0 else "proj_out" if i == n - 1 else f"layers.{i - 1}"
            o = f"{m.group(1)}.{part}.{m.group(3)}"
        o = re.sub(r"^image_encoder\.neck\.(\d)\.", lambda mm: f"image_encoder.neck.{_NECK[mm.group(1)]}.", o)
        o = re.sub(r"^prompt_encoder\.mask_downscaling\.(\d)\.",
                   lambda mm: f"prompt_encoder.mask_embed.{_DOWNSCALE[mm.group(1)]}.", o)
        o = re.sub(r"^mask_decoder\.output_upscaling\.(\d)\.",
                   lambda mm: f"mask_decoder.{_UPSCALE[mm.group(1)]}.", o)
        o = re.sub(r"^prompt_encoder\.point_embeddings\.", "prompt_encoder.point_embed.", o)
        o = re.sub(r"^image_encoder\.blocks\.", "image_encoder.layers.", o)
        o = re.sub(r"^image_encoder\.patch_embed\.proj\.", "image_encoder.patch_embed.projection.", o)
        o = re.sub(r"\.norm(\d)\.", r".layer_norm\1.", o)
        o = o.replace("mask_decoder.transformer.norm_final_attn.",
                      "mask_decoder.transformer.layer_norm_final_attn.")
        o = re.sub(r"^image_encoder\.", "vision_encoder.", o)
        out[o] = v
    return out


def sam_hf_to_original(state: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`sam_original_to_hf`: ``SamModel`` names -> ``segment_anything`` names."""
    hidden: dict[str, int] = {}
    for k in state:
        m = _HF_MLP.match(k)
        if m and m.group(3) is not None:
            hidden[m.group(1)] = max(hidden.get(m.group(1), 0), int(m.group(3)) + 1)
    inv_neck = {v: k for k, v in _NECK.items()}
    inv_down = {v: k for k, v in _DOWNSCALE.items()}
    inv_up = {v: k for k, v in _UPSCALE.items()}
    out: dict[str, Any] = {}
    for k, v in state.items():
        if k == _PE_HF[1]:
            continue
        if k == _PE_HF[0]:
            out[_PE_ORIG] = v
            continue
        o = k
        m = _HF_MLP.match(o)
        if m:
            part = m.group(2)
            n = hidden.get(m.group(1), 0) + 2
            i = 0 if part == "proj_in" else n - 1 if part == "proj_out" else int(m.group(3)) + 1
            o = f"{m.group(1)}.layers.{i}.{m.group(4)}"
        o = re.sub(r"^vision_encoder\.", "image_encoder.", o)
        o = re.sub(r"^image_encoder\.neck\.(\w+)\.",
                   lambda mm: f"image_encoder.neck.{inv_neck[mm.group(1)]}.", o)
        o = re.sub(r"^prompt_encoder\.mask_embed\.(\w+)\.",
                   lambda mm: f"prompt_encoder.mask_downscaling.{inv_down[mm.group(1)]}.", o)
        o = re.sub(r"^mask_decoder\.(upscale_conv1|upscale_layer_norm|upscale_conv2)\.",
                   lambda mm: f"mask_decoder.output_upscaling.{inv_up[mm.group(1)]}.", o)
        o = re.sub(r"^prompt_encoder\.point_embed\.", "prompt_encoder.point_embeddings.", o)
        o = re.sub(r"^image_encoder\.layers\.", "image_encoder.blocks.", o)
        o = re.sub(r"^image_encoder\.patch_embed\.projection\.", "image_encoder.patch_embed.proj.", o)
        o = o.replace("mask_decoder.transformer.layer_norm_final_attn.",
                      "mask_decoder.transformer.norm_final_attn.")
        o = re.sub(r"\.layer_norm(\d)\.", r".norm\1.", o)
        out[o] = v
    return out


# --------------------------------------------------------------------------- torch parts


def build_sam_model(config: Mapping[str, Any], device: str = "cpu") -> Any:
    """A ``SamModel`` with random weights from ``SamConfig`` kwargs, in eval mode."""
    import torch
    from transformers import SamConfig, SamModel

    with torch.device(device):
        model = SamModel(SamConfig(**dict(config)))
    with torch.no_grad():  # one matrix in real checkpoints: make the two random copies equal
        model.shared_image_embedding.positional_embedding.copy_(
            model.prompt_encoder.shared_embedding.positional_embedding)
    return model.eval()


def _check_keys(src: Path | str, sd: Mapping[str, Any], ref: Mapping[str, Any]) -> None:
    missing = sorted(set(ref) - set(sd))
    extra = sorted(set(sd) - set(ref))
    wrong = [k for k in ref if k in sd and tuple(ref[k].shape) != tuple(sd[k].shape)]
    if missing or extra or wrong:
        raise ModelNotAvailableError(
            f"{src} does not fit the SAM model configuration: {len(missing)} missing key(s)"
            f" {missing[:3]}, {len(extra)} unexpected {extra[:3]}, {len(wrong)} of another shape"
            f" {wrong[:3]}; import it with the right config"
        )


def convert_sam_checkpoint(src: Path, config: Mapping[str, Any], out_dir: Path) -> None:
    """Convert a SAM/MedSAM checkpoint ``src`` into a transformers folder (strict key check)."""
    import torch
    from safetensors.torch import save_file
    from transformers import SamConfig, SamModel

    from segloop.models.convert import load_original_checkpoint

    try:
        sd = sam_original_to_hf(load_original_checkpoint(src))
    except ValueError as exc:
        raise ModelNotAvailableError(f"{src} is not a SAM/MedSAM checkpoint: {exc}") from exc
    cfg = SamConfig(**dict(config))
    with torch.device("meta"):
        ref = SamModel(cfg).state_dict()
    _check_keys(src, sd, ref)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=".convert-"))
    try:
        tensors = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in sd.items()}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        cfg.save_pretrained(str(tmp))
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_sam_model(name: str, device: str = "cpu") -> Any:
    """Load registry model ``name`` (converting the cached checkpoint on first use) as a
    ``SamModel`` in eval mode on ``device`` (fp32), with a strict key check."""
    import torch
    from safetensors.torch import load_file
    from transformers import SamConfig, SamModel

    from segloop.models.store import checkpoint_path, hf_dir, is_available, model_config, not_cached_message

    if not is_available(name):
        raise ModelNotAvailableError(f"{name}: {not_cached_message(name)}")
    d = hf_dir(name)
    if not ((d / "config.json").is_file() and (d / "model.safetensors").is_file()):
        log.info("converting %s to transformers format in %s", checkpoint_path(name), d)
        convert_sam_checkpoint(checkpoint_path(name), model_config(name), d)
    cfg = SamConfig.from_json_file(str(d / "config.json"))
    with torch.device("meta"):
        model = SamModel(cfg)
    sd = load_file(str(d / "model.safetensors"), device=str(device))
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelNotAvailableError(
            f"cached weights of {name} do not load ({exc}); run `segloop models remove {name}`"
            " and import it again"
        ) from exc
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        # a buffer computed at construction and not stored: build on the device and copy in
        with torch.device(device):
            real = SamModel(cfg)
        real.load_state_dict(sd, strict=True)
        model = real
    return model.eval()


def sam_model_from_file(path: Path, config: Mapping[str, Any], device: str = "cpu") -> Any:
    """A ``SamModel`` with the weights of a SAM/MedSAM checkpoint file (either layout), strict."""
    import torch
    from transformers import SamConfig, SamModel

    from segloop.models.convert import load_original_checkpoint

    try:
        sd = sam_original_to_hf(load_original_checkpoint(path))
    except ValueError as exc:
        raise ModelNotAvailableError(f"{path} is not a SAM/MedSAM checkpoint: {exc}") from exc
    with torch.device(device):
        model = SamModel(SamConfig(**dict(config)))
    _check_keys(path, sd, model.state_dict())
    model.load_state_dict(sd, strict=True)
    return model.eval()
