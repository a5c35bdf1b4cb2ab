"""Model versions: a finished run becomes a registry model named ``<engine>@<run>``.

:func:`register_run` imports the run's exported weights (a ``transformers`` folder) into the
model cache through :func:`segloop.models.store.import_model` and records, in the cached
``meta.json`` under ``"trained"``, its base model, engine, validation scores and run folder.
:func:`register_saved_runs` re-registers every such cached model in this process's registry
(the registry itself only knows the built-in models), so ``segloop models list``,
``get_engine("medsam2", model="medsam2@RUN")`` and ``segloop eval --engine medsam2@RUN`` see them.

Pure Python (json, pathlib, segloop.models): must not import torch, the API or the engines.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from segloop.errors import InputError, SegloopError
from segloop.models.registry import ModelSpec, get_spec, model_names, register_model
from segloop.models.store import import_model, models_home, read_meta

__all__ = [
    "TRAINED_KEY",
    "register_run",
    "register_saved_runs",
    "resolve_model_version",
    "run_model_name",
    "saved_run_specs",
]

log = logging.getLogger(__name__)

#: key of ``meta.json`` that marks a cached model as a fine-tuned run
TRAINED_KEY = "trained"

_RUN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def run_model_name(base_engine: str, run_name: str) -> str:
    """``"medsam2@run1"``: the registry name of a run; InputError for unusable run names."""
    if not _RUN_RE.match(run_name):
        raise InputError(f"run name {run_name!r}: use letters, digits, '.', '_' and '-' (max 100)")
    return f"{base_engine}@{run_name}"


def _spec_from_meta(name: str, meta: dict[str, Any]) -> ModelSpec | None:
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
        meta_path = d / "meta.json"
        if not (d.is_dir() and meta_path.is_file()):
            continue
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        spec = _spec_from_meta(d.name, meta) if isinstance(meta, dict) else None
        if spec is not None:
            out.append(spec)
    return out


def register_saved_runs() -> list[str]:
    """Register the cached fine-tuned runs in this process; returns their names."""
    names = []
    known = set(model_names())
    for spec in saved_run_specs():
        if spec.name not in known:
            register_model(spec)
        names.append(spec.name)
    return names


def resolve_model_version(text: str) -> tuple[str, str]:
    """``"medsam2@RUN"`` -> (engine name, registry model name), registering saved runs first.

    Raises SegloopError when no such run is cached.
    """
    engine, _, run = text.partition("@")
    if not run:
        return text, text
    register_saved_runs()
    try:
        spec = get_spec(text)
    except SegloopError:
        raise SegloopError(
            f"no trained model {text!r} in {models_home()}: train one with `segloop train ..."
            f" --out DIR --name {run}` (see `segloop models list`)"
        ) from None
    return spec.engine or engine, spec.name


def register_run(model_folder: Path, name: str, *, base_model: str, engine: str,
                 config: dict[str, Any], val_scores: dict[str, float], run_dir: Path,
                 licence: str = "see base model") -> Path:
    """Import a run's ``transformers`` folder into the model cache as ``name``; return its dir."""
    info = {"base_model": base_model, "engine": engine, "val_scores": val_scores,
            "run_dir": str(Path(run_dir).resolve()), "licence": licence}
    spec = _spec_from_meta(name, {TRAINED_KEY: info, "config": config})
    assert spec is not None
    register_model(spec)
    d = import_model(model_folder, name, config=config)
    meta = read_meta(name)
    meta[TRAINED_KEY] = info
    tmp = d / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    os.replace(tmp, d / "meta.json")
    log.info("registered %s (from %s) in %s", name, base_model, d)
    return d
