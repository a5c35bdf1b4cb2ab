"""One training step's parts: precision, scheduler, a clip's forward pass and loss, and the
validation scores of a model on fixed samples.

Imports torch; must not import the training loop, the API, the jobs layer, eval or the CLI.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from segloop.errors import InputError
from segloop.train.config import Precision, Scheduler, TrainConfig
from segloop.train.loss import clip_loss
from segloop.train.model import forward_clip, frames_to_tensor, prompt_inputs, truth_to_tensor
from segloop.train.records import Sample

__all__ = ["autocast", "evaluate_samples", "make_scheduler", "precision_dtype", "run_sample"]


def precision_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--precision`` on ``device`` (None: fp32); InputError for fp16 on CPU."""
    p = Precision(cfg.precision)
    if p == Precision.AUTO:
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if p == Precision.FP16:
        if device.type != "cuda":
            raise InputError("--precision fp16 needs a CUDA GPU; use bf16 or fp32 here")
        return torch.float16
    return torch.bfloat16 if p == Precision.BF16 else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` to ``dtype``, or nothing for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def make_scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer) -> Any:
    """The ``--scheduler`` for ``opt`` (stepped once per epoch), or None."""
    s = Scheduler(cfg.scheduler)
    if s == Scheduler.PLATEAU:
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="max", factor=cfg.gamma, patience=max(1, cfg.patience // 2 or 2))
    if s == Scheduler.COSINE:
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    if s == Scheduler.STEP:
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, cfg.step_size), gamma=cfg.gamma)
    return None


def run_sample(model: Any, sample: Sample, size: int, device: torch.device,
                dtype: torch.dtype | None, cfg: TrainConfig) -> Any:
    """One forward pass of a clip and its loss (a ``ClipLoss``: total, clip IoU and Dice)."""
    h, w = sample.truth.shape[1:]
    frames = frames_to_tensor(sample.frames, size)
    inputs = prompt_inputs(sample.prompt, int(h), int(w), size)
    with autocast(device, dtype):
        outs = forward_clip(model, frames, inputs, device)
    return clip_loss(outs, truth_to_tensor(sample.truth, size).to(device),
                     dice_weight=cfg.dice_weight, iou_weight=cfg.iou_weight,
                     object_weight=cfg.object_weight)


def evaluate_samples(model: Any, samples: list[Sample], size: int, device: torch.device,
                     dtype: torch.dtype | None = None, cfg: TrainConfig | None = None,
                     on_step: Callable[[int], None] | None = None) -> dict[str, float]:
    """Mean loss, IoU and Dice of ``model`` on ``samples`` (IoU/Dice per clip, over its frames,
    at model resolution)."""
    cfg = cfg or TrainConfig(out=".")
    losses: list[float] = []
    ious: list[float] = []
    dices: list[float] = []
    with torch.no_grad():
        for i, s in enumerate(samples):
            res = run_sample(model, s, size, device, dtype, cfg)
            losses.append(float(res.total))
            ious.append(res.clip_iou)
            dices.append(res.clip_dice)
            if on_step is not None:
                on_step(i + 1)
    iou = float(np.mean(ious)) if ious else 0.0
    dice = float(np.mean(dices)) if dices else 0.0
    return {"val_loss": float(np.mean(losses)) if losses else 0.0, "val_iou": iou,
            "val_dice": dice}
