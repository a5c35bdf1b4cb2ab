"""Fine-tuned runs saved in the model cache, read back as registry entries.

A run cached by ``segloop train`` has a ``meta.json`` with a ``"trained"`` record (base model,
engine, validation scores, run folder) and its config; :func:`saved_run_specs` turns each into a
:class:`ModelSpec`. Reads only: writing a run is :func:`segloop.models.versions.register_run`.
Must not import the registry, store or versions modules (the registry imports this one), torch
or transformers.
"""

from __future__ import annotations

import json
from typing import Any

from segloop.models.paths import META, models_home
from segloop.models.spec import ModelSpec

__all__ = ["TRAINED_KEY", "saved_run_specs", "spec_from_meta"]

#: key of ``meta.json`` that marks a cached model as a fine-tuned run
TRAINED_KEY = "trained"


def spec_from_meta(name: str, meta: dict[str, Any]) -> ModelSpec | None:
    """The registry entry of the cached model ``name`` when its ``meta`` marks a run, else None."""
    info = meta.get(TRAINED_KEY)
    cfg = meta.get("config")
    if not isinstance(info, dict) or not isinstance(cfg, dict):
        return None
    scores = info.get("val_scores") or {}
    iou = scores.get("val_iou")
    desc = f"fine-tuned from {info.get('base_model', '?')}"
    if isinstance(iou, int | float):
        desc += f" (val IoU {iou:.3f})"
    return ModelSpec(
        name=name, description=desc, config=cfg, licence=str(info.get("licence", "see base")),
        engine=str(info.get("engine", "medsam2")),
        extra={"base_model": info.get("base_model"), "val_scores": scores,
               "run_dir": info.get("run_dir")},
    )


def saved_run_specs() -> list[ModelSpec]:
    """Registry entries of every fine-tuned run cached under ``$SEGLOOP_HOME/models``."""
    home = models_home()
    if not home.is_dir():
        return []
    out: list[ModelSpec] = []
    for d in sorted(home.iterdir()):
        meta_path = d / META
        if not (d.is_dir() and meta_path.is_file()):
            continue
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        spec = spec_from_meta(d.name, meta) if isinstance(meta, dict) else None
        if spec is not None:
            out.append(spec)
    return out
