"""Conversion between SAM 2 / MedSAM2 original checkpoints and ``transformers`` Sam2Video models.

Original checkpoints (Meta's ``sam2.1_hiera_*.pt``, bowang-lab's ``MedSAM2_*.pt``) are
``torch.load(path, weights_only=True)["model"]``: a state dict named after the ``sam2`` package's
modules. :func:`original_to_hf` renames (and, for the point embeddings, concatenates) it into the
names of ``transformers.Sam2VideoModel``; :func:`hf_to_original` is its inverse. The mapping
depends only on names, never on sizes, so it serves every Hiera size and input resolution.
:func:`build_config` returns the JSON-able ``Sam2VideoConfig`` fields of a variant at a given
input size (the five resolution-dependent fields are set together).

This module imports torch; it is only imported by the model store and the sam2 engine, never
at ``segloop.models`` import time. It must not import the engines, the API or the CLI.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from segloop.errors import ModelNotAvailableError
from segloop.models.configs import HIERA_SIZES, build_config

__all__ = [
    "HIERA_SIZES",
    "build_config",
    "hf_to_original",
    "load_original_checkpoint",
    "original_to_hf",
]

# --------------------------------------------------------------------------- key mapping

_RENAMES_TOP = {
    "maskmem_tpos_enc": "memory_temporal_positional_encoding",
    "no_mem_embed": "no_memory_embedding",
    "no_mem_pos_enc": "no_memory_positional_encoding",
    "no_obj_ptr": "no_object_pointer",
    "no_obj_embed_spatial": "occlusion_spatial_embedding_parameter",
}
_PE_ORIG = "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
_PE_HF = ("prompt_encoder.shared_embedding.positional_embedding",
          "shared_image_embedding.positional_embedding")
_POINT_EMB = re.compile(r"^sam_prompt_encoder\.point_embeddings\.(\d+)\.weight$")
_POINT_EMB_HF = "prompt_encoder.point_embed.weight"
#: prefixes (regex) of the original multi-layer perceptrons stored as ``<prefix>.layers.<i>.*``
_MLP_PREFIXES = re.compile(
    r"^(obj_ptr_proj|image_encoder\.trunk\.blocks\.\d+\.mlp|sam_mask_decoder\.transformer\.layers\.\d+\.mlp"
    r"|sam_mask_decoder\.output_hypernetworks_mlps\.\d+|sam_mask_decoder\.iou_prediction_head"
    r"|sam_mask_decoder\.pred_obj_score_head)\.layers\.(\d+)\.(weight|bias)$"
)
_SEQ_MASK_DOWNSCALING = {"0": "conv1", "1": "layer_norm1", "3": "conv2", "4": "layer_norm2",
                         "6": "conv3"}
_SEQ_UPSCALING = {"0": "upscale_conv1", "1": "upscale_layer_norm", "3": "upscale_conv2"}
# plain substring renames applied in order after the structural ones (original -> hf)
_SUBS: tuple[tuple[str, str], ...] = (
    ("image_encoder.trunk.", "vision_encoder.backbone."),
    ("image_encoder.neck.", "vision_encoder.neck."),
    ("sam_mask_decoder.", "mask_decoder."),
    ("sam_prompt_encoder.", "prompt_encoder."),
    ("obj_ptr_tpos_proj.", "temporal_positional_encoding_projection_layer."),
    ("obj_ptr_proj.", "object_pointer_proj."),
    ("memory_encoder.pix_feat_proj.", "memory_encoder.feature_projection."),
    ("memory_encoder.out_proj.", "memory_encoder.projection."),
    ("memory_encoder.fuser.", "memory_encoder.memory_fuser."),
)
_LEAF_SUBS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\.patch_embed\.proj\."), ".patch_embed.projection."),
    (re.compile(r"(\.neck\.convs\.\d+)\.conv\."), r"\1."),
    (re.compile(r"\.out_proj\."), ".o_proj."),
    (re.compile(r"\.norm(\d)\."), r".layer_norm\1."),
    (re.compile(r"^memory_attention\.norm\."), "memory_attention.layer_norm."),
    (re.compile(r"\.transformer\.norm_final_attn\."), ".transformer.layer_norm_final_attn."),
    (re.compile(r"(memory_fuser\.layers\.\d+)\.dwconv\."), r"\1.depthwise_conv."),
    (re.compile(r"(memory_fuser\.layers\.\d+)\.norm\."), r"\1.layer_norm."),
    (re.compile(r"(memory_fuser\.layers\.\d+)\.pwconv(\d)\."), r"\1.pointwise_conv\2."),
    (re.compile(r"(memory_fuser\.layers\.\d+)\.gamma$"), r"\1.scale"),
)


def _mlp_depths(keys: list[str], pattern: re.Pattern[str]) -> dict[str, int]:
    depth: dict[str, int] = {}
    for k in keys:
        m = pattern.match(k)
        if m:
            depth[m.group(1)] = max(depth.get(m.group(1), 0), int(m.group(2)) + 1)
    return depth


def _rename_original_key(k: str, mlp_depth: dict[str, int], downsampler_last: int) -> str:
    if k in _RENAMES_TOP:
        return _RENAMES_TOP[k]
    m = _MLP_PREFIXES.match(k)
    if m:
        prefix, i, leaf = m.group(1), int(m.group(2)), m.group(3)
        n = mlp_depth[prefix]
        part = "proj_in" if i == 0 else "proj_out" if i == n - 1 else f"layers.{i - 1}"
        k = f"{prefix}.{part}.{leaf}"
    m = re.match(r"^sam_prompt_encoder\.mask_downscaling\.(\d+)\.(.*)$", k)
    if m:
        k = f"sam_prompt_encoder.mask_embed.{_SEQ_MASK_DOWNSCALING[m.group(1)]}.{m.group(2)}"
    m = re.match(r"^sam_mask_decoder\.output_upscaling\.(\d+)\.(.*)$", k)
    if m:
        k = f"sam_mask_decoder.{_SEQ_UPSCALING[m.group(1)]}.{m.group(2)}"
    m = re.match(r"^memory_encoder\.mask_downsampler\.encoder\.(\d+)\.(.*)$", k)
    if m:
        i = int(m.group(1))
        if i == downsampler_last:
            part = "final_conv"
        else:
            part = f"layers.{i // 3}." + ("conv" if i % 3 == 0 else "layer_norm")
        k = f"memory_encoder.mask_downsampler.{part}.{m.group(2)}"
    for a, b in _SUBS:
        if k.startswith(a):
            k = b + k[len(a):]
    for pat, rep in _LEAF_SUBS:
        k = pat.sub(rep, k)
    return k


def original_to_hf(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an original SAM 2 / MedSAM2 state dict into ``transformers`` Sam2VideoModel names.

    Tensors are not copied except the point embeddings (concatenated into one ``(4, C)``
    table). Works for meta tensors too. Raises ValueError on a key it does not know.
    """
    keys = list(state)
    depth = _mlp_depths(keys, _MLP_PREFIXES)
    ds = [int(m.group(1)) for k in keys
          if (m := re.match(r"^memory_encoder\.mask_downsampler\.encoder\.(\d+)\.", k))]
    ds_last = max(ds) if ds else -1
    out: dict[str, torch.Tensor] = {}
    points: dict[int, torch.Tensor] = {}
    for k, v in state.items():
        if k == _PE_ORIG:
            for name in _PE_HF:
                out[name] = v
            continue
        m = _POINT_EMB.match(k)
        if m:
            points[int(m.group(1))] = v
            continue
        if not re.match(r"^(image_encoder|memory_attention|memory_encoder|sam_mask_decoder|"
                        r"sam_prompt_encoder|obj_ptr_proj|obj_ptr_tpos_proj|mask_downsample)\.", k) \
                and k not in _RENAMES_TOP:
            raise ValueError(f"unexpected key {k!r} in a SAM 2 checkpoint")
        out[_rename_original_key(k, depth, ds_last)] = v
    if points:
        out[_POINT_EMB_HF] = torch.cat([points[i] for i in sorted(points)], dim=0)
    return out


# inverse direction --------------------------------------------------------------------------

_HF_MLP = re.compile(
    r"^(object_pointer_proj|vision_encoder\.backbone\.blocks\.\d+\.mlp|mask_decoder\.transformer\."
    r"layers\.\d+\.mlp|mask_decoder\.output_hypernetworks_mlps\.\d+|mask_decoder\."
    r"iou_prediction_head|mask_decoder\.pred_obj_score_head)\.(proj_in|proj_out|layers\.(\d+))\."
    r"(weight|bias)$"
)


def hf_to_original(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`original_to_hf`: ``transformers`` names back to the original ones.

    Lets fine-tuned weights be exported in the format of MedSAM2's own code.
    """
    keys = list(state)
    hidden: dict[str, int] = {}
    for k in keys:
        m = _HF_MLP.match(k)
        if m and m.group(3) is not None:
            hidden[m.group(1)] = max(hidden.get(m.group(1), 0), int(m.group(3)) + 1)
    ds_layers = {int(m.group(1)) for k in keys
                 if (m := re.match(r"^memory_encoder\.mask_downsampler\.layers\.(\d+)\.", k))}
    n_ds = max(ds_layers) + 1 if ds_layers else 0
    inv_top = {v: k for k, v in _RENAMES_TOP.items()}
    inv_md = {v: k for k, v in _SEQ_MASK_DOWNSCALING.items()}
    inv_up = {v: k for k, v in _SEQ_UPSCALING.items()}
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k == _PE_HF[1]:
            continue
        if k == _PE_HF[0]:
            out[_PE_ORIG] = v
            continue
        if k == _POINT_EMB_HF:
            for i in range(v.shape[0]):
                out[f"sam_prompt_encoder.point_embeddings.{i}.weight"] = v[i : i + 1]
            continue
        if k in inv_top:
            out[inv_top[k]] = v
            continue
        o = k
        m = _HF_MLP.match(o)
        if m:
            prefix, part, leaf = m.group(1), m.group(2), m.group(4)
            n = hidden.get(prefix, 0) + 2
            i = 0 if part == "proj_in" else n - 1 if part == "proj_out" else int(m.group(3)) + 1
            o = f"{prefix}.layers.{i}.{leaf}"
        m2 = re.match(r"^prompt_encoder\.mask_embed\.(\w+)\.(.*)$", o)
        if m2:
            o = f"prompt_encoder.mask_downscaling.{inv_md[m2.group(1)]}.{m2.group(2)}"
        m2 = re.match(r"^mask_decoder\.(upscale_conv1|upscale_layer_norm|upscale_conv2)\.(.*)$", o)
        if m2:
            o = f"mask_decoder.output_upscaling.{inv_up[m2.group(1)]}.{m2.group(2)}"
        m2 = re.match(r"^memory_encoder\.mask_downsampler\.(final_conv|layers\.(\d+)\.(conv|layer_norm))"
                      r"\.(.*)$", o)
        if m2:
            if m2.group(1) == "final_conv":
                idx = 3 * n_ds
            else:
                idx = 3 * int(m2.group(2)) + (0 if m2.group(3) == "conv" else 1)
            o = f"memory_encoder.mask_downsampler.encoder.{idx}.{m2.group(4)}"
        for pat, rep in (
            (r"(memory_fuser\.layers\.\d+)\.depthwise_conv\.", r"\1.dwconv."),
            (r"(memory_fuser\.layers\.\d+)\.layer_norm\.", r"\1.norm."),
            (r"(memory_fuser\.layers\.\d+)\.pointwise_conv(\d)\.", r"\1.pwconv\2."),
            (r"(memory_fuser\.layers\.\d+)\.scale$", r"\1.gamma"),
            (r"\.transformer\.layer_norm_final_attn\.", ".transformer.norm_final_attn."),
            (r"^memory_attention\.layer_norm\.", "memory_attention.norm."),
            (r"\.layer_norm(\d)\.", r".norm\1."),
            (r"\.o_proj\.", ".out_proj."),
            (r"(\.neck\.convs\.\d+)\.", r"\1.conv."),
            (r"\.patch_embed\.projection\.", ".patch_embed.proj."),
        ):
            o = re.sub(pat, rep, o)
        for a, b in _SUBS:
            if o.startswith(b):
                o = a + o[len(b):]
        out[o] = v
    return out


def load_original_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Read an original-format checkpoint (``{"model": state_dict}``) safely (weights only)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, ...
        raise ModelNotAvailableError(
            f"{path} is not a readable PyTorch checkpoint ({exc.__class__.__name__}: {exc});"
            " download it again"
        ) from exc
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        sd = obj["model"]
    elif isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = obj
    else:
        raise ModelNotAvailableError(
            f"{path} does not look like a SAM 2 checkpoint: expected {{'model': state_dict}}"
        )
    return {str(k): v for k, v in sd.items()}
