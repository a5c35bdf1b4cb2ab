"""SAM-Med3D checkpoints: the official parameter names <-> segloop's, strict loading.

The official trainer saves ``{"model_state_dict": state_dict, ...}`` (``sam_med3d_turbo.pth``
too); a bare state dict is accepted as well. :func:`official_to_ours` renames the 324 official
tensors (``image_encoder.neck.0.weight``, ``prompt_encoder.point_embeddings.1.weight``, ...)
to :class:`~segloop.engines.sammed3d.model.SamMed3D`'s names by a fixed rule table and
:func:`ours_to_official` inverts it, so a fine-tuned model can be written back in the layout
the official code loads. Files are read with ``torch.load(weights_only=True)`` (no code runs)
and every name and shape is checked: a missing, unexpected or mis-shaped tensor is an error
that lists them. Imports torch; must not import the session, the CLI, FastAPI or Celery.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from segloop.engines.sammed3d.model import SamMed3D, SamMed3DConfig
from segloop.errors import ModelNotAvailableError

__all__ = [
    "check_state_dict",
    "load_model_file",
    "load_official_file",
    "official_to_ours",
    "ours_to_official",
    "save_official",
]

#: official name pattern -> ours (applied in order, first match wins; ``\g<n>`` back-references)
_RULES: tuple[tuple[str, str], ...] = (
    (r"image_encoder\.patch_embed\.proj\.", "image_encoder.patch_embed."),
    (r"image_encoder\.neck\.0\.", "image_encoder.neck_conv1."),
    (r"image_encoder\.neck\.1\.", "image_encoder.neck_norm1."),
    (r"image_encoder\.neck\.2\.", "image_encoder.neck_conv2."),
    (r"image_encoder\.neck\.3\.", "image_encoder.neck_norm2."),
    (r"prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix$", "prompt_encoder.pe_gaussian"),
    (r"prompt_encoder\.point_embeddings\.0\.weight$", "prompt_encoder.neg_point"),
    (r"prompt_encoder\.point_embeddings\.1\.weight$", "prompt_encoder.pos_point"),
    (r"prompt_encoder\.not_a_point_embed\.weight$", "prompt_encoder.not_a_point"),
    (r"prompt_encoder\.no_mask_embed\.weight$", "prompt_encoder.no_mask"),
    (r"prompt_encoder\.mask_downscaling\.0\.", "prompt_encoder.mask_conv1."),
    (r"prompt_encoder\.mask_downscaling\.1\.", "prompt_encoder.mask_norm1."),
    (r"prompt_encoder\.mask_downscaling\.3\.", "prompt_encoder.mask_conv2."),
    (r"prompt_encoder\.mask_downscaling\.4\.", "prompt_encoder.mask_norm2."),
    (r"prompt_encoder\.mask_downscaling\.6\.", "prompt_encoder.mask_conv3."),
    (r"mask_decoder\.transformer\.layers\.", "mask_decoder.layers."),
    (r"mask_decoder\.transformer\.final_attn_token_to_image\.", "mask_decoder.final_attn."),
    (r"mask_decoder\.transformer\.norm_final_attn\.", "mask_decoder.final_norm."),
    (r"mask_decoder\.iou_token\.weight$", "mask_decoder.iou_token"),
    (r"mask_decoder\.mask_tokens\.weight$", "mask_decoder.mask_tokens"),
    (r"mask_decoder\.output_upscaling\.0\.", "mask_decoder.up1."),
    (r"mask_decoder\.output_upscaling\.1\.", "mask_decoder.up_norm."),
    (r"mask_decoder\.output_upscaling\.3\.", "mask_decoder.up2."),
    (r"mask_decoder\.output_hypernetworks_mlps\.", "mask_decoder.hyper."),
    (r"mask_decoder\.iou_prediction_head\.", "mask_decoder.iou_head."),
)
_OURS = [(re.compile("^" + a), b) for a, b in _RULES]


def _inverse_rules() -> list[tuple[re.Pattern[str], str]]:
    out = []
    for a, b in _RULES:
        plain = a.replace("\\.", ".").rstrip("$")
        out.append((re.compile("^" + re.escape(b) + ("$" if a.endswith("$") else "")), plain))
    return out


_OFFICIAL = _inverse_rules()


def _rename(name: str, rules: list[tuple[re.Pattern[str], str]]) -> str:
    for pat, repl in rules:
        new, n = pat.subn(repl, name, count=1)
        if n:
            return new
    return name


def official_to_ours(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official SAM-Med3D state dict to segloop's parameter names."""
    return {_rename(k, _OURS): v for k, v in sd.items()}


def ours_to_official(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a segloop SAM-Med3D state dict to the official names (inverse of the above)."""
    return {_rename(k, _OFFICIAL): v for k, v in sd.items()}


def check_state_dict(sd: Mapping[str, Any], reference: Mapping[str, Any], what: str) -> None:
    """Raise ModelNotAvailableError unless ``sd`` has exactly ``reference``'s names and shapes.

    Both use segloop's names; values need a ``shape`` (tensors, also on the meta device).
    """
    missing = sorted(set(reference) - set(sd))
    unexpected = sorted(set(sd) - set(reference))
    shapes = sorted(k for k in set(sd) & set(reference)
                    if tuple(sd[k].shape) != tuple(reference[k].shape))
    if missing or unexpected or shapes:
        def few(names: list[str]) -> str:
            return ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")

        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {few(unexpected)}")
        if shapes:
            parts.append("shape mismatch: " + few(
                [f"{k} {tuple(sd[k].shape)} vs {tuple(reference[k].shape)}" for k in shapes]))
        raise ModelNotAvailableError(
            f"{what} is not a SAM-Med3D checkpoint of this architecture ({'; '.join(parts)})"
        )


def load_official_file(path: Path) -> dict[str, torch.Tensor]:
    """The official-name state dict inside ``path`` (``model_state_dict`` unwrapped), on the CPU."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, refused globals, truncated files
        raise ModelNotAvailableError(
            f"cannot read {path} as a SAM-Med3D checkpoint (loaded with weights_only=True): {exc}"
        ) from exc
    if isinstance(obj, dict) and isinstance(obj.get("model_state_dict"), dict):
        obj = obj["model_state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelNotAvailableError(
            f"{path} holds no state dict: expected {{'model_state_dict': {{name: tensor}}}}"
        )
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def load_model_file(path: Path, config: SamMed3DConfig, device: str | torch.device = "cpu"
                    ) -> SamMed3D:
    """A :class:`SamMed3D` in eval mode with the weights of the official-layout file ``path``."""
    sd = official_to_ours(load_official_file(path))
    with torch.device("meta"):
        ref = SamMed3D(config).state_dict()
    check_state_dict(sd, ref, str(path))
    model = SamMed3D(config)
    model.load_state_dict(sd, strict=True)
    return model.to(device).eval()


def save_official(model: SamMed3D, path: Path, **extra: Any) -> Path:
    """Write ``model`` as ``{"model_state_dict": official names, **extra}`` (the trainer's layout)."""
    sd = ours_to_official({k: v.detach().cpu() for k, v in model.state_dict().items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model_state_dict": sd, **extra}, tmp)
    tmp.replace(path)
    return path
