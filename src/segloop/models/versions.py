"""Model versions: a finished run becomes a registry model named ``<engine>@<run>``.

:func:`register_run` imports the run's exported weights (a ``transformers`` folder) into the
model cache through :func:`segloop.models.store.import_model` and records, in the cached
``meta.json`` under ``"trained"``, its base model, engine, validation scores and run folder.
:func:`register_saved_runs` re-registers every such cached model in this process's registry
(the registry itself only knows the built-in models), so ``segloop models list``,
``get_engine("medsam2", model="medsam2@RUN")`` and ``segloop eval --engine medsam2@RUN`` see them.

``run_model_name`` (:mod:`segloop.models.naming`), ``TRAINED_KEY`` and ``saved_run_specs``
(:mod:`segloop.models.runs`) are re-exported here. Pure Python (json, pathlib, segloop.models):
must not import torch, the API or the engines.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from segloop.errors import SegloopError
from segloop.fsio import atomic_write_text
from segloop.models.naming import parse_model_version, run_model_name
from segloop.models.paths import META
from segloop.models.registry import get_spec, model_names, register_model
from segloop.models.runs import TRAINED_KEY, saved_run_specs, spec_from_meta
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
    version = parse_model_version(text)
    if version is None:
        return text, text
    register_saved_runs()
    try:
        spec = get_spec(text)
    except SegloopError:
        raise SegloopError(
            f"no trained model {text!r} in {models_home()}: train one with `segloop train ..."
            f" --out DIR --name {version.run}` (see `segloop models list`)"
        ) from None
    return spec.engine or version.engine, spec.name


def register_run(model_folder: Path, name: str, *, base_model: str, engine: str,
                 config: dict[str, Any], val_scores: dict[str, float], run_dir: Path,
                 licence: str = "see base model") -> Path:
    """Import a run's ``transformers`` folder into the model cache as ``name``; return its dir."""
    info = {"base_model": base_model, "engine": engine, "val_scores": val_scores,
            "run_dir": str(Path(run_dir).resolve()), "licence": licence}
    spec = spec_from_meta(name, {TRAINED_KEY: info, "config": config})
    assert spec is not None
    register_model(spec)
    d = import_model(model_folder, name, config=config)
    meta = read_meta(name)
    meta[TRAINED_KEY] = info
    atomic_write_text(d / META, json.dumps(meta, indent=2, sort_keys=True))
    log.info("registered %s (from %s) in %s", name, base_model, d)
    return d
