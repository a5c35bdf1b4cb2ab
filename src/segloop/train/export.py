"""A finished run's outputs for use elsewhere: the ``transformers`` folder (``model/``), the image
encoder alone (``encoder.safetensors`` + ``encoder_config.json``), and its registration in the
model cache as ``ENGINE@RUN`` (and ``ENGINE@RUN.base`` for a random start).

Imports torch, safetensors and transformers lazily; must not import the training loop, the API,
the jobs layer, eval or the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from segloop.fsio import atomic_write_text

__all__ = ["export_run", "register_outputs", "save_transformers_folder"]


def save_transformers_folder(model: Any, model_cfg: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Write ``model.safetensors`` + ``config.json`` into ``folder``; returns the fp32 state dict
    (name -> CPU tensor)."""
    import torch
    from safetensors.torch import save_file
    from transformers import Sam2VideoConfig

    sd = {k: v.detach().to("cpu", torch.float32).contiguous().clone()
          for k, v in model.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    Sam2VideoConfig(**model_cfg).save_pretrained(str(folder))
    return sd


def export_run(model: Any, model_cfg: dict[str, Any], run_dir: Path) -> None:
    """``model/`` (the whole model, ``transformers`` format) and the image encoder alone."""
    from safetensors.torch import save_file

    sd = save_transformers_folder(model, model_cfg, run_dir / "model")
    enc = {k: v for k, v in sd.items() if k.startswith("vision_encoder.")}
    save_file(enc, str(run_dir / "encoder.safetensors"), metadata={"format": "pt"})
    atomic_write_text(run_dir / "encoder_config.json", json.dumps(
        {"vision_config": model_cfg.get("vision_config", {}),
         "prefix": "vision_encoder.", "tensors": len(enc)}, indent=1))


def _scores(scores: dict[str, Any]) -> dict[str, float]:
    return {k: float(scores[k]) for k in ("val_iou", "val_dice", "val_loss") if k in scores}


def register_outputs(run_dir: Path, *, engine: str, run_name: str, base_model: str,
                     model_cfg: dict[str, Any], best: dict[str, Any],
                     before: dict[str, float]) -> dict[str, str]:
    """Register ``model/`` as ``ENGINE@RUN`` (and a random start's ``base/`` as
    ``ENGINE@RUN.base``); returns the summary entries (``registered_as``, ``base_registered_as``)."""
    from segloop.models.versions import register_run, run_model_name

    out: dict[str, str] = {}
    model_name = run_model_name(engine, run_name)
    register_run(run_dir / "model", model_name, base_model=base_model, engine=engine,
                 config=model_cfg, run_dir=run_dir, val_scores=_scores(best))
    out["registered_as"] = model_name
    if (run_dir / "base").is_dir():
        base_reg = run_model_name(engine, f"{run_name}.base")
        register_run(run_dir / "base", base_reg, base_model=base_model, engine=engine,
                     config=model_cfg, run_dir=run_dir, val_scores=_scores(before))
        out["base_registered_as"] = base_reg
    return out
