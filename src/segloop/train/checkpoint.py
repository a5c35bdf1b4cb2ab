"""Run checkpoints: what ``best.pt`` / ``latest.pt`` hold, how they are written, read and resumed.

``best.pt`` holds the weights with the resolved config and preprocessing; ``latest.pt`` adds
everything an identical continuation needs (optimiser, scheduler, grad scaler, the dataset's
numpy generator, torch and Python RNG states, history). Written atomically and durably
(:mod:`segloop.fsio`), loaded with ``weights_only=True`` and a strict key check.

Imports torch; must not import the training loop, the API, the jobs layer, eval or the CLI.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from segloop.errors import InputError, SegloopError
from segloop.fsio import atomic_path
from segloop.train.config import TrainConfig
from segloop.train.data import ClipDataset

__all__ = [
    "CHECKPOINT_FORMAT",
    "LoopState",
    "load_checkpoint",
    "preprocessing_record",
    "read_resume_checkpoint",
    "rng_states",
    "save_checkpoint",
    "set_rng_states",
]

CHECKPOINT_FORMAT = "segloop-train-checkpoint/1"

#: settings that must not change between a run and its resumption
_RESUME_KEYS = ("images", "masks", "manifest", "root", "datastore", "model", "image_size", "parts",
                "clip_length", "seed", "accumulate", "samples_per_epoch", "val_fraction")


@dataclass
class LoopState:
    """Where the loop is: what ``latest.pt`` keeps besides the weights and optimiser states.

    ``epoch``: the last finished epoch (0 before the first); ``step``: optimiser steps so far;
    ``best``: the best epoch's validation scores (``val_iou`` -1 before any); ``before``: the
    base model's validation scores (None until measured).
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    epoch: int = 0
    step: int = 0
    bad_epochs: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"val_iou": -1.0, "epoch": 0})
    before: dict[str, float] | None = None


def preprocessing_record(cfg: TrainConfig, size: int) -> dict[str, Any]:
    """How images are turned into model input, recorded in ``config.json`` and every checkpoint."""
    from segloop.engines.sam2.preprocess import IMAGENET_MEAN, IMAGENET_STD

    return {"image_size": size, "window": cfg.window, "resize": "bicubic",
            "scale": "CT window or 0.5-99.5 percentiles to uint8, /255",
            "mean": IMAGENET_MEAN.tolist(), "std": IMAGENET_STD.tolist(),
            "axes": "slices (H=y, W=x) of the canonical RAS volume; 2D images as read"}


def rng_states(ds: ClipDataset) -> dict[str, Any]:
    """The random states a continuation needs: the dataset's, torch's (CUDA too) and Python's."""
    out: dict[str, Any] = {"dataset": ds.rng_state(), "torch": torch.get_rng_state(),
                           "python": random.getstate()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_states(ds: ClipDataset, states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` recorded."""
    ds.set_rng_state(states["dataset"])
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(obj: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, flushed, then renamed over it."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def read_resume_checkpoint(latest: Path, cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    """``latest.pt`` of an earlier run with the same settings (InputError naming what changed)."""
    ck = torch.load(latest, map_location=device, weights_only=True)
    if ck.get("format") != CHECKPOINT_FORMAT:
        raise SegloopError(f"{latest} is not a segloop training checkpoint")
    old = ck.get("config", {})
    changed = [k for k in _RESUME_KEYS if old.get(k) != cfg.to_dict().get(k)]
    if changed:
        raise InputError(
            f"--resume: {latest} was trained with other settings ("
            + ", ".join(f"{k}: {old.get(k)!r} -> {cfg.to_dict().get(k)!r}" for k in changed)
            + "); use the same arguments, or a new --out folder")
    return dict(ck)


def load_checkpoint(path: Path, device: str | torch.device = "cpu"
                    ) -> tuple[Any, dict[str, Any]]:
    """A model rebuilt from a run checkpoint (``best.pt`` / ``latest.pt``) and the checkpoint.

    Loaded with ``weights_only=True`` and a strict key check; SegloopError when the file is
    not a segloop training checkpoint or does not fit its own configuration.
    """
    from segloop.models.loader import build_model

    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise SegloopError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise SegloopError(f"{path} is not a segloop training checkpoint")
    model = build_model(ck["model_config"], device=device)
    try:
        model.load_state_dict(ck["model"], strict=True)
    except RuntimeError as exc:
        raise SegloopError(f"{path}: weights do not fit the stored configuration: {exc}") from exc
    return model.eval(), ck
