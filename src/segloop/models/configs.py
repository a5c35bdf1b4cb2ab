"""Model configurations of the SAM 2.1 Hiera sizes as plain JSON-able dicts (no torch).

:func:`build_config` returns the keyword arguments of ``transformers.Sam2VideoConfig`` for a
Hiera size at an input resolution. Kept free of torch and transformers so the registry can be
listed and checked in processes that never load a model (the API). Must not import torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HIERA_SIZES", "build_config", "config_image_size", "sam_vit_b_config", "tiny_config",
           "tiny_sam_config"]

#: Hiera trunk hyper-parameters of the SAM 2.1 sizes (as in Meta's released configs)
HIERA_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"embed_dim": 96, "heads": 1, "stages": [1, 2, 7, 2], "global": [5, 7, 9],
             "window": [8, 4, 14, 7], "bkg": [7, 7]},
    "small": {"embed_dim": 96, "heads": 1, "stages": [1, 2, 11, 2], "global": [7, 10, 13],
              "window": [8, 4, 14, 7], "bkg": [7, 7]},
    "base-plus": {"embed_dim": 112, "heads": 2, "stages": [2, 3, 16, 3], "global": [12, 16, 20],
                  "window": [8, 4, 14, 7], "bkg": [14, 14]},
    "large": {"embed_dim": 144, "heads": 2, "stages": [2, 6, 36, 4], "global": [23, 33, 43],
              "window": [8, 4, 16, 8], "bkg": [7, 7]},
}


def _with_resolution(config: dict[str, Any], image_size: int) -> dict[str, Any]:
    """Set the five fields that depend on the input size, together, in a config dict.

    Backbone image size, FPN feature sizes (strides 4, 8, 16), prompt-encoder image size,
    model image size and memory-attention RoPE feature size; ``image_size`` must be a
    positive multiple of 32 (the stride of the coarsest feature map).
    """
    if image_size <= 0 or image_size % 32:
        raise ValueError(f"image_size must be a positive multiple of 32, got {image_size}")
    s4, s8, s16 = image_size // 4, image_size // 8, image_size // 16
    vision = config["vision_config"]
    vision["backbone_config"]["image_size"] = [image_size, image_size]
    vision["backbone_feature_sizes"] = [[s4, s4], [s8, s8], [s16, s16]]
    config["prompt_encoder_config"]["image_size"] = image_size
    config["image_size"] = image_size
    config["memory_attention_rope_feat_sizes"] = [s16, s16]
    return config


def build_config(size: str = "tiny", image_size: int = 1024) -> dict[str, Any]:
    """The ``Sam2VideoConfig`` keyword arguments of SAM 2.1 Hiera ``size`` at ``image_size`` px.

    ``image_size`` must be a multiple of 32 (the stride of the coarsest feature map). The five
    fields that depend on it (backbone and model image size, FPN feature sizes, prompt encoder
    image size, memory-attention RoPE feature size) are derived together: a model built with
    only some of them loads a checkpoint strictly and fails at its first frame.
    """
    if size not in HIERA_SIZES:
        raise ValueError(f"unknown Hiera size {size!r}; known: {', '.join(HIERA_SIZES)}")
    h = HIERA_SIZES[size]
    d = int(h["embed_dim"])
    heads = int(h["heads"])
    return _with_resolution({
        "vision_config": {
            "model_type": "sam2_vision_model",
            "backbone_config": {
                "model_type": "sam2_hiera_det_model",
                "hidden_size": d,
                "num_attention_heads": heads,
                "blocks_per_stage": list(h["stages"]),
                "embed_dim_per_stage": [d, 2 * d, 4 * d, 8 * d],
                "num_attention_heads_per_stage": [heads, 2 * heads, 4 * heads, 8 * heads],
                "window_size_per_stage": list(h["window"]),
                "global_attention_blocks": list(h["global"]),
                "window_positional_embedding_background_size": list(h["bkg"]),
            },
            "backbone_channel_list": [8 * d, 4 * d, 2 * d, d],
        },
        "prompt_encoder_config": {},
    }, image_size)


def config_image_size(config: dict[str, Any]) -> int:
    """The model input size (px) of a ``Sam2VideoConfig`` kwargs dict (default 1024)."""
    size = config.get("image_size", 1024)
    return int(size[0] if isinstance(size, list | tuple) else size)


def tiny_config(image_size: int = 128) -> dict[str, Any]:
    """A tiny random-weight ``Sam2VideoConfig`` (about 1.5 M parameters) for tests and demos.

    Keeps the constraints of the architecture: memory-encoder output 64 channels, memory and
    FPN width 128 (a multiple of 64), the global-attention block not first in its stage.
    """
    return _with_resolution({
        "vision_config": {
            "model_type": "sam2_vision_model",
            "backbone_config": {
                "model_type": "sam2_hiera_det_model",
                "hidden_size": 16,
                "num_attention_heads": 1,
                "blocks_per_stage": [1, 1, 2, 1],
                "embed_dim_per_stage": [16, 32, 64, 128],
                "num_attention_heads_per_stage": [1, 1, 2, 2],
                "window_size_per_stage": [8, 4, 4, 4],
                "global_attention_blocks": [3],
                "window_positional_embedding_background_size": [4, 4],
            },
            "backbone_channel_list": [128, 64, 32, 16],
            "fpn_hidden_size": 128,
        },
        "prompt_encoder_config": {"hidden_size": 128},
        "mask_decoder_config": {"hidden_size": 128, "mlp_dim": 256, "iou_head_hidden_dim": 128,
                                "num_attention_heads": 4},
        "memory_attention_hidden_size": 128,
        "memory_attention_feed_forward_hidden_size": 256,
        "memory_attention_num_layers": 1,
        "memory_encoder_hidden_size": 128,
        "memory_encoder_output_channels": 64,
        "mask_downsampler_embed_dim": 128,
        "memory_fuser_embed_dim": 128,
        "memory_fuser_intermediate_dim": 256,
        "memory_fuser_num_layers": 1,
    }, image_size)


# --------------------------------------------------------------------------- SAM v1 (MedSAM)


def sam_vit_b_config(image_size: int = 1024) -> dict[str, Any]:
    """``SamConfig`` kwargs of SAM ViT-B (MedSAM v1) at ``image_size`` px (JSON-able)."""
    return {
        "vision_config": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                          "global_attn_indexes": [2, 5, 8, 11], "image_size": image_size,
                          "output_channels": 256, "window_size": 14},
        "prompt_encoder_config": {"hidden_size": 256, "image_size": image_size},
        "mask_decoder_config": {"hidden_size": 256},
    }


def tiny_sam_config(image_size: int = 64) -> dict[str, Any]:
    """A tiny ``SamConfig`` (2 ViT blocks of width 32) for tests: same names, fast."""
    return {
        "vision_config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                          "global_attn_indexes": [1], "image_size": image_size,
                          "output_channels": 32, "window_size": 2, "num_pos_feats": 16,
                          "mlp_dim": 64},
        "prompt_encoder_config": {"hidden_size": 32, "image_size": image_size,
                                  "mask_input_channels": 4},
        "mask_decoder_config": {"hidden_size": 32, "mlp_dim": 64, "num_attention_heads": 2,
                                "iou_head_hidden_dim": 32},
    }
