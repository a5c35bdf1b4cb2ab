"""The training loop behind ``segloop train``: epochs of clips, validation, checkpoints, resume.

:func:`~segloop.train.prepare.prepare_data` reads and splits the data of a :class:`TrainConfig`;
:func:`train` runs it. One sample (a clip) per forward pass; ``accumulate`` samples per
optimiser step (AdamW, gradient clipping); validation after every epoch on fixed samples (exact
boxes, mean IoU and Dice per clip); then the scheduler (plateau on val IoU, cosine, step), the
best checkpoint (highest val IoU), the latest checkpoint (everything needed for an identical
continuation, :mod:`segloop.train.checkpoint`) and early stopping. The base model is validated
first, so the summary has before/after scores.

Run folder (``--out``): ``config.json``, ``best.pt``, ``latest.pt`` (``torch.load(...,
weights_only=True)``), ``model/`` (best weights in ``transformers`` format: what gets
registered), ``encoder.safetensors`` + ``encoder_config.json`` (image encoder only,
:mod:`segloop.train.export`), ``metrics.csv``, ``tensorboard/`` (when the ``tensorboard`` package
is installed), ``curves.png`` (:mod:`segloop.train.runlog`), ``summary.json``.

``CHECKPOINT_FORMAT``, ``load_checkpoint``, ``plot_curves``, ``PreparedData``, ``prepare_data``,
``resolve_config`` and ``evaluate_samples`` are re-exported here from the modules that own them.

Progress goes to an ``on_progress`` callback (the CLI draws bars); library code only logs.
Imports torch; must not import the API, the jobs layer, eval or the CLI.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segloop.errors import InputError, SegloopError
from segloop.fsio import atomic_write_text
from segloop.train.checkpoint import (
    CHECKPOINT_FORMAT,
    LoopState,
    load_checkpoint,
    preprocessing_record,
    read_resume_checkpoint,
    rng_states,
    save_checkpoint,
    set_rng_states,
)
from segloop.train.config import Part, TrainConfig
from segloop.train.data import ClipDataset
from segloop.train.export import export_run, register_outputs, save_transformers_folder
from segloop.train.model import enable_gradient_checkpointing, load_base_model, resolve_device, set_trainable
from segloop.train.prepare import PreparedData, prepare_data, resolve_config
from segloop.train.records import Sample
from segloop.train.runlog import RunLog, plot_curves
from segloop.train.steps import evaluate_samples, make_scheduler, precision_dtype, run_sample

__all__ = [
    "CHECKPOINT_FORMAT",
    "PreparedData",
    "Progress",
    "TrainResult",
    "evaluate_samples",
    "load_checkpoint",
    "plot_curves",
    "prepare_data",
    "resolve_config",
    "train",
]

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """A progress report: ``phase`` is ``"train"``, ``"val"`` or ``"epoch"`` (epoch finished)."""

    phase: str
    epoch: int
    epochs: int
    done: int
    total: int
    loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainResult:
    """What a finished (or early-stopped) run produced."""

    run_dir: Path
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    step_losses: list[float]
    model_name: str | None


# ---------------------------------------------------------------------------------- the loop


@dataclass
class _Run:
    """What one run works with, built once by :func:`_setup`."""

    cfg: TrainConfig
    data: PreparedData
    device: torch.device
    dtype: torch.dtype | None
    model: Any
    model_cfg: dict[str, Any]
    base_name: str
    size: int
    n_train: int
    n_total: int
    params: list[torch.nn.Parameter]
    opt: torch.optim.Optimizer
    sched: Any
    scaler: Any
    ds: ClipDataset
    val_samples: list[Sample]
    on_progress: Callable[[Progress], None] | None

    @property
    def run_dir(self) -> Path:
        return self.cfg.out_dir

    def report(self, p: Progress) -> None:
        if self.on_progress is not None:
            self.on_progress(p)

    def validate(self, epoch: int) -> dict[str, float]:
        n, epochs = len(self.val_samples), self.cfg.epochs
        return evaluate_samples(
            self.model, self.val_samples, self.size, self.device, self.dtype, self.cfg,
            on_step=lambda i: self.report(Progress("val", epoch, epochs, i, n)))


def _setup(cfg: TrainConfig, data: PreparedData,
           on_progress: Callable[[Progress], None] | None) -> _Run:
    """Datasets, model (trainable parts, checkpointing), optimiser, scheduler and grad scaler."""
    clip = cfg.clip_length if cfg.is_3d else 1
    ds = ClipDataset(data.train, clip, np.random.default_rng(cfg.seed), cfg.box_jitter)
    val_ds = ClipDataset(data.val, clip, np.random.default_rng(cfg.seed + 1), cfg.box_jitter)
    val_samples = val_ds.validation_samples()
    if cfg.val_samples > 0:
        val_samples = val_samples[:cfg.val_samples]

    device = resolve_device(cfg.device)
    dtype = precision_dtype(cfg, device)
    model, model_cfg, base_name = load_base_model(cfg.model, cfg.image_size, device, cfg.seed)
    n_train, n_total = set_trainable(model, [Part(p) for p in cfg.parts or []])
    if n_train == 0:
        raise InputError("nothing to train: --train selected no parameter")
    if cfg.grad_checkpointing:
        n_ck = enable_gradient_checkpointing(model)
        log.info("gradient checkpointing on %d layers", n_ck)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return _Run(cfg=cfg, data=data, device=device, dtype=dtype, model=model, model_cfg=model_cfg,
                base_name=base_name, size=int(model.config.image_size), n_train=n_train,
                n_total=n_total, params=params, opt=opt, sched=make_scheduler(cfg, opt),
                scaler=torch.amp.GradScaler("cuda") if dtype == torch.float16 else None,
                ds=ds, val_samples=val_samples, on_progress=on_progress)


def _start_or_resume(run: _Run, resume: bool) -> LoopState:
    """A fresh loop state, or the one of ``latest.pt`` (weights, optimiser, RNGs restored)."""
    latest = run.run_dir / "latest.pt"
    if resume and latest.is_file():
        ck = read_resume_checkpoint(latest, run.cfg, run.device)
        run.model.load_state_dict(ck["model"], strict=True)
        run.opt.load_state_dict(ck["optimizer"])
        if run.sched is not None and ck.get("scheduler") is not None:
            run.sched.load_state_dict(ck["scheduler"])
        if run.scaler is not None and ck.get("scaler") is not None:
            run.scaler.load_state_dict(ck["scaler"])
        set_rng_states(run.ds, ck["rng"])
        state = LoopState(history=list(ck["history"]), step_losses=list(ck["step_losses"]),
                          epoch=int(ck["epoch"]), step=int(ck["step"]),
                          bad_epochs=int(ck["bad_epochs"]), best=dict(ck["best"]),
                          before=ck.get("before"))
        log.info("resumed from %s at epoch %d (step %d)", latest, state.epoch + 1, state.step)
        return state
    if resume:
        log.warning("--resume: no %s yet; starting a new run", latest)
    elif latest.is_file():
        log.warning("%s holds an earlier run: starting over (use --resume to continue it)",
                    run.run_dir)
    return LoopState()


def _train_epoch(run: _Run, state: LoopState, epoch: int, logger: RunLog) -> dict[str, Any]:
    """One epoch of optimiser steps, then validation; returns the epoch's history row."""
    cfg, opt, scaler = run.cfg, run.opt, run.scaler
    t0 = time.time()
    order = run.ds.epoch_order(cfg.samples_per_epoch)
    ep_losses: list[float] = []
    ep_ious: list[float] = []
    opt.zero_grad(set_to_none=True)
    for i, idx in enumerate(order):
        sample = run.ds.sample(idx)
        res = run_sample(run.model, sample, run.size, run.device, run.dtype, cfg)
        loss = res.total / cfg.accumulate
        if scaler is not None:
            scaler.scale(loss).backward()
        elif loss.requires_grad:
            loss.backward()
        value = float(res.total.detach())
        if not math.isfinite(value):
            raise SegloopError(f"the loss became {value} at epoch {epoch}: lower --lr or"
                               " use --precision fp32")
        ep_losses.append(value)
        state.step_losses.append(value)
        ep_ious.append(res.clip_iou)
        if (i + 1) % cfg.accumulate == 0 or i + 1 == len(order):
            if scaler is not None:
                scaler.unscale_(opt)
            if cfg.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(run.params, cfg.clip_grad)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            opt.zero_grad(set_to_none=True)
            state.step += 1
            logger.scalars(state.step, {"train/loss": value, "train/lr": opt.param_groups[0]["lr"]})
        run.report(Progress("train", epoch, cfg.epochs, i + 1, len(order), loss=value))
    scores = run.validate(epoch)
    lr = float(opt.param_groups[0]["lr"])
    return {"epoch": epoch, "step": state.step,
            "train_loss": float(np.mean(ep_losses)) if ep_losses else 0.0,
            "train_iou": float(np.mean(ep_ious)) if ep_ious else 0.0,
            **scores, "lr": lr, "seconds": round(time.time() - t0, 3)}


def _end_epoch(run: _Run, state: LoopState, row: dict[str, Any], logger: RunLog) -> None:
    """Log the epoch, step the scheduler, track the best epoch, write ``best.pt``/``latest.pt``."""
    epoch = int(row["epoch"])
    scores = {k: v for k, v in row.items() if k.startswith("val_")}
    state.history.append(row)
    state.epoch = epoch
    logger.scalars(state.step, {f"epoch/{k}": float(v) for k, v in row.items()
                                if k not in ("epoch", "step")})
    logger.epoch_rows(state.history)
    if isinstance(run.sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        run.sched.step(scores["val_iou"])
    elif run.sched is not None:
        run.sched.step()
    improved = scores["val_iou"] > float(state.best["val_iou"]) + 1e-6
    if improved:
        state.best = {**scores, "epoch": epoch, "step": state.step}
        state.bad_epochs = 0
    else:
        state.bad_epochs += 1
    ck = {
        "format": CHECKPOINT_FORMAT, "config": run.cfg.to_dict(), "model_config": run.model_cfg,
        "preprocessing": preprocessing_record(run.cfg, run.size), "base_model": run.base_name,
        "epoch": epoch, "step": state.step, "scores": scores,
        "model": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
    }
    if improved:
        save_checkpoint(ck, run.run_dir / "best.pt")
    save_checkpoint({**ck, "optimizer": run.opt.state_dict(),
                     "scheduler": run.sched.state_dict() if run.sched is not None else None,
                     "scaler": run.scaler.state_dict() if run.scaler is not None else None,
                     "rng": rng_states(run.ds), "history": state.history,
                     "step_losses": state.step_losses, "best": state.best,
                     "bad_epochs": state.bad_epochs, "before": state.before},
                    run.run_dir / "latest.pt")
    run.report(Progress("epoch", epoch, run.cfg.epochs, epoch, run.cfg.epochs,
                        loss=row["train_loss"], metrics=scores))


def _finish(run: _Run, state: LoopState, logger: RunLog, stopped_early: bool,
            seconds: float) -> TrainResult:
    """Export the best weights, draw the curves, register the run, write ``summary.json``."""
    cfg, run_dir, before = run.cfg, run.run_dir, state.before
    assert before is not None
    best_model, _ = load_checkpoint(run_dir / "best.pt", run.device)
    export_run(best_model, run.model_cfg, run_dir)
    if state.history:
        plot_curves(state.history, run_dir / "curves.png", before)
    summary: dict[str, Any] = {
        "run": cfg.run_name, "base_model": run.base_name, "engine": cfg.base_engine,
        "device": str(run.device), "precision": str(run.dtype or "fp32"), "parts": cfg.parts,
        "train_items": len(run.ds), "val_samples": len(run.val_samples),
        "val_is_train": run.data.val_is_train,
        "train_patients": sorted({r.patient_id for r in run.data.train}),
        "val_patients": sorted({r.patient_id for r in run.data.val}),
        "epochs_run": len(state.history), "steps": state.step, "stopped_early": stopped_early,
        "seconds": round(seconds, 2), "before": before, "best": state.best,
        "final": state.history[-1] if state.history else None, "logging": logger.backends,
        "files": {"best": "best.pt", "latest": "latest.pt", "model": "model/",
                  "encoder": "encoder.safetensors", "curves": "curves.png",
                  "base": "base/ (random start only)",
                  "metrics": "metrics.csv"},
    }
    model_name = None
    if cfg.register:
        names = register_outputs(run_dir, engine=cfg.base_engine, run_name=str(cfg.run_name),
                                 base_model=run.base_name, model_cfg=run.model_cfg,
                                 best=state.best, before=before)
        summary.update(names)
        model_name = names["registered_as"]
    if float(state.best.get("val_iou", -1.0)) <= float(before["val_iou"]):
        log.warning("the best epoch (val IoU %.4f) is not better than the base model (%.4f)",
                    float(state.best.get("val_iou", -1.0)), float(before["val_iou"]))
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=1, default=str))
    return TrainResult(run_dir=run_dir, summary=summary, history=state.history,
                       step_losses=state.step_losses, model_name=model_name)


def train(cfg: TrainConfig, *, resume: bool = False,
          on_progress: Callable[[Progress], None] | None = None,
          data: PreparedData | None = None) -> TrainResult:
    """Run (or resume) the training described by ``cfg``; see the module docstring.

    ``data``: already prepared records (default: :func:`prepare_data`). ``resume``: continue
    from ``<out>/latest.pt`` when it exists.
    """
    cfg = resolve_config(cfg)
    torch.set_num_threads(max(1, int(cfg.threads)))
    run_dir = cfg.out_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    run = _setup(cfg, data if data is not None else prepare_data(cfg), on_progress)
    state = _start_or_resume(run, resume)

    atomic_write_text(run_dir / "config.json", json.dumps(
        {"train": cfg.to_dict(), "model": run.model_cfg,
         "preprocessing": preprocessing_record(cfg, run.size), "base_model": run.base_name,
         "trainable_parameters": run.n_train, "parameters": run.n_total},
        indent=1, default=str))
    logger = RunLog(cfg, run_dir)
    log.info("training %s: %d/%d parameters (%s), %d train items, %d val samples, %s%s",
             run.base_name, run.n_train, run.n_total, ",".join(cfg.parts or []), len(run.ds),
             len(run.val_samples), run.device, f" {run.dtype}" if run.dtype else "")

    # a random start (--model tiny) is no registry model: keep it, so that `segloop eval` can
    # compare the run with where it started (registered as ENGINE@RUN.base)
    if run.base_name == "tiny" and not (run_dir / "base").is_dir():
        save_transformers_folder(run.model, run.model_cfg, run_dir / "base")

    t_start = time.time()
    if state.before is None:
        state.before = run.validate(0)
        logger.scalars(0, state.before)
    stopped_early = False
    try:
        for epoch in range(state.epoch + 1, cfg.epochs + 1):
            _end_epoch(run, state, _train_epoch(run, state, epoch, logger), logger)
            if cfg.patience > 0 and state.bad_epochs >= cfg.patience:
                log.info("early stop at epoch %d: no better val IoU for %d epochs", epoch,
                         state.bad_epochs)
                stopped_early = True
                break
    finally:
        logger.close()
    return _finish(run, state, logger, stopped_early, time.time() - t_start)
