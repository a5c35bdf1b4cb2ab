"""Load a cached model as a ``transformers.Sam2VideoModel`` (converting it on first use).

:func:`ensure_converted` turns the cached original checkpoint into ``hf/config.json`` +
``hf/model.safetensors`` (strict key check against a model built from the config);
:func:`load_model` loads that folder. Imports torch and transformers: only the sam2 engine and
the ``models`` CLI import this module, lazily. Must not import the API or the engines.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from segloop.errors import ModelNotAvailableError
from segloop.fsio import replace_dir
from segloop.models.convert import load_original_checkpoint, original_to_hf
from segloop.models.registry import get_spec
from segloop.models.store import (
    checkpoint_path,
    hf_dir,
    is_available,
    model_config,
    model_dir,
    not_cached_message,
)

__all__ = ["build_model", "convert_state_dict_file", "ensure_converted", "load_model",
           "save_original_checkpoint"]

log = logging.getLogger(__name__)


def build_model(config: dict[str, Any], device: str | torch.device = "cpu") -> Any:
    """A ``Sam2VideoModel`` with random weights from ``Sam2VideoConfig`` kwargs, in eval mode."""
    from transformers import Sam2VideoConfig, Sam2VideoModel

    with torch.device(device):
        model = Sam2VideoModel(Sam2VideoConfig(**config))
    with torch.no_grad():  # one matrix in real checkpoints: make the two random copies equal
        model.shared_image_embedding.positional_embedding.copy_(
            model.prompt_encoder.shared_embedding.positional_embedding
        )
    return model.eval()


def convert_state_dict_file(src: Path, config: dict[str, Any], out_dir: Path) -> None:
    """Convert an original checkpoint ``src`` into a transformers folder ``out_dir`` (strict)."""
    from safetensors.torch import save_file
    from transformers import Sam2VideoConfig, Sam2VideoModel

    sd = original_to_hf(load_original_checkpoint(src))
    cfg = Sam2VideoConfig(**config)
    with torch.device("meta"):
        ref = Sam2VideoModel(cfg).state_dict()
    missing = sorted(set(ref) - set(sd))
    extra = sorted(set(sd) - set(ref))
    wrong = [k for k in ref if k in sd and tuple(ref[k].shape) != tuple(sd[k].shape)]
    if missing or extra or wrong:
        raise ModelNotAvailableError(
            f"{src} does not fit the model configuration: {len(missing)} missing key(s)"
            f" {missing[:3]}, {len(extra)} unexpected {extra[:3]}, {len(wrong)} of another shape"
            f" {wrong[:3]}; import it with the right config (`segloop models import --config`)"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=".convert-"))
    try:
        tensors = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in sd.items()}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        cfg.save_pretrained(str(tmp))
        replace_dir(tmp, out_dir, overwrite=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_converted(name: str) -> Path:
    """The ``hf/`` folder of ``name``, converting the cached original checkpoint if needed."""
    spec = get_spec(name)
    if not is_available(name):
        raise ModelNotAvailableError(f"{spec.name}: {not_cached_message(name)}")
    out = hf_dir(name)
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    log.info("converting %s to transformers format in %s", checkpoint_path(name), out)
    if spec.engine == "medsam":  # SAM v1 layout (transformers SamModel)
        from segloop.models.sam_v1 import convert_sam_checkpoint

        convert_sam_checkpoint(checkpoint_path(name), model_config(name), out)
        return out
    convert_state_dict_file(checkpoint_path(name), model_config(name), out)
    return out


def load_model(name: str, device: str | torch.device = "cpu") -> Any:
    """Load ``name`` from the cache as a ``Sam2VideoModel`` in eval mode on ``device`` (fp32).

    One copy of the weights: the model is built on the meta device (no random init, no
    memory) and takes the loaded tensors themselves (``assign``), read straight onto
    ``device``; copying them into a materialised model held the weights twice while loading."""
    from safetensors.torch import load_file
    from transformers import Sam2VideoConfig, Sam2VideoModel

    d = ensure_converted(name)
    cfg = Sam2VideoConfig.from_json_file(str(d / "config.json"))
    with torch.device("meta"):
        model = Sam2VideoModel(cfg)
    sd = load_file(str(d / "model.safetensors"), device=str(torch.device(device)))
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelNotAvailableError(
            f"cached weights of {name} do not load ({exc}); run `segloop models remove {name}`"
            " and pull or import it again"
        ) from exc
    del sd
    # the buffers computed at construction and not stored in the checkpoint (RoPE
    # frequencies, positions) are still on the meta device: rebuild them for real
    for mod in list(model.modules()):
        names: set[str] = getattr(mod, "_non_persistent_buffers_set", set())
        if names and hasattr(mod, "config"):
            fresh = type(mod)(mod.config)
            for b in names:
                setattr(mod, b, getattr(fresh, b).to(device))
    log.debug("loaded %s from %s", name, model_dir(name))
    return model.eval()


def save_original_checkpoint(model: Any, path: Path) -> Path:
    """Write a model's weights in the original SAM 2 format ``{"model": state_dict}``."""
    from segloop.models.convert import hf_to_original

    sd = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": hf_to_original(sd)}, path)
    return path
