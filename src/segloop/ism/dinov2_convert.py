"""DINOv2 checkpoints in Meta's layout (``dinov2_vitl14_pretrain.pth``, SAM-6D's) → ``transformers``.

Meta's ViT (``facebookresearch/dinov2``, copied into SAM-6D's ``model/vision_transformer.py``)
names its tensors ``blocks.i.attn.qkv``, ``blocks.i.ls1.gamma``, ``pos_embed``…; ``transformers``'
``Dinov2Model`` splits the fused qkv and (transformers 5) uses ``encoder.layer.i.attention.q_proj``…
:func:`dinov2_original_to_hf` maps one to the other (no register tokens, MLP feed-forward, as
ViT-S/B/L/14). Imports nothing heavy (works on any mapping of array-likes with ``shape``).
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from segloop.errors import InputError

__all__ = ["dinov2_original_to_hf"]

_TOP = {
    "cls_token": "embeddings.cls_token",
    "mask_token": "embeddings.mask_token",
    "pos_embed": "embeddings.position_embeddings",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}
_BLOCK = {
    "norm1": "norm1", "norm2": "norm2", "attn.proj": "attention.o_proj",
    "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
}


def dinov2_original_to_hf(state: Mapping[str, Any]) -> dict[str, Any]:
    """``transformers`` ``Dinov2Model`` state dict from Meta's DINOv2 ViT state dict.

    Raises InputError on a key it does not know (register tokens, SwiGLU, chunked blocks)."""
    out: dict[str, Any] = {}
    for k, v in state.items():
        if k in _TOP:
            out[_TOP[k]] = v
            continue
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)\.(weight|bias|gamma)", k)
        if m is None:
            raise InputError(f"unexpected DINOv2 tensor {k!r}: only plain ViT-S/B/L/14 checkpoints "
                             "(no registers, no SwiGLU, block_chunks=0) are supported")
        i, part, kind = m.groups()
        pre = f"encoder.layer.{i}."
        if part == "attn.qkv":
            d = v.shape[0] // 3
            for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
                out[f"{pre}attention.{name}.{kind}"] = v[j * d:(j + 1) * d]
        elif part in ("ls1", "ls2") and kind == "gamma":
            out[f"{pre}layer_scale{part[-1]}.lambda1"] = v
        elif part in _BLOCK:
            out[f"{pre}{_BLOCK[part]}.{kind}"] = v
        else:
            raise InputError(f"unexpected DINOv2 tensor {k!r}")
    return out
