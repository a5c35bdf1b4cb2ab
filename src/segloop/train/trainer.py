"""The training loop behind ``segloop train``: epochs of clips, validation, checkpoints, resume.

:func:`prepare_data` reads and splits the data of a :class:`TrainConfig`; :func:`train` runs
it. One sample (a clip) per forward pass; ``accumulate`` samples per optimiser step (AdamW,
gradient clipping); validation after every epoch on fixed samples (exact boxes, mean IoU and
Dice per clip); then the scheduler (plateau on val IoU, cosine, step), the best checkpoint
(highest val IoU), the latest checkpoint (everything needed for an identical continuation:
weights, optimiser, scheduler, grad scaler, the dataset's numpy generator, torch and Python RNG
states, history) and early stopping. The base model is validated first, so the summary has
before/after scores.

Run folder (``--out``): ``config.json``, ``best.pt``, ``latest.pt`` (``torch.load(...,
weights_only=True)``), ``model/`` (best weights in ``transformers`` format: what gets
registered), ``encoder.safetensors`` + ``encoder_config.json`` (image encoder only),
``metrics.csv``, ``tensorboard/`` (when the ``tensorboard`` package is installed),
``curves.png``, ``summary.json``.

Progress goes to an ``on_progress`` callback (the CLI draws bars); library code only logs.
Imports torch; must not import the API, the jobs layer or the CLI.
"""

from __future__ import annotations

import contextlib
import csv
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
from segloop.train.config import (
    DEFAULT_PARTS_2D,
    DEFAULT_PARTS_3D,
    Part,
    Precision,
    Scheduler,
    TrainConfig,
)
from segloop.train.data import (
    ClipDataset,
    ImageRecord,
    Sample,
    datastore_manifest,
    load_folders,
    load_manifest_records,
    split_records,
)
from segloop.train.loss import clip_loss
from segloop.train.model import (
    enable_gradient_checkpointing,
    forward_clip,
    frames_to_tensor,
    load_base_model,
    prompt_inputs,
    resolve_device,
    set_trainable,
    truth_to_tensor,
)

__all__ = [
    "CHECKPOINT_FORMAT",
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

CHECKPOINT_FORMAT = "segloop-train-checkpoint/1"

#: settings that must not change between a run and its resumption
_RESUME_KEYS = ("images", "masks", "manifest", "root", "datastore", "model", "image_size", "parts",
                "clip_length", "seed", "accumulate", "samples_per_epoch", "val_fraction")


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


# ---------------------------------------------------------------------------------- config/data


def resolve_config(cfg: TrainConfig) -> TrainConfig:
    """Fill defaults that depend on the data source, the model cache and ``smoke``."""
    from segloop.models.registry import get_spec
    from segloop.models.store import is_available
    from segloop.models.versions import register_saved_runs

    cfg.validate()
    register_saved_runs()  # a trained ENGINE@RUN can be the starting point of another run
    if cfg.smoke:
        cfg.epochs = min(cfg.epochs, 2)
        cfg.samples_per_epoch = cfg.samples_per_epoch or 4
        cfg.val_samples = cfg.val_samples or 2
    if cfg.model != "tiny":
        try:
            spec = get_spec(cfg.model)
        except SegloopError:
            if cfg.smoke:
                cfg.model = "tiny"
            else:
                raise
        else:
            if not is_available(spec.name) and cfg.smoke:
                log.warning("no cached weights for %s: --smoke uses a tiny random model", spec.name)
                cfg.model = "tiny"
            else:
                cfg.model = spec.name
                cfg.base_engine = spec.engine
                cfg.image_size = spec.image_size
    if not cfg.parts:
        cfg.parts = [p.value for p in (DEFAULT_PARTS_3D if cfg.is_3d else DEFAULT_PARTS_2D)]
    if cfg.run_name is None:
        cfg.run_name = Path(cfg.out).resolve().name
    return cfg


def prepare_data(cfg: TrainConfig) -> tuple[list[ImageRecord], list[ImageRecord], bool]:
    """(train records, validation records, validation-is-training-data) of a config.

    Split by patient (seeded) unless the 2D folders have ``train/`` and ``val/``. With a
    single patient there is nothing to hold out: validation uses the training records.
    """
    if cfg.images is not None and cfg.masks is not None:
        train, val = load_folders(Path(cfg.images), Path(cfg.masks), val_fraction=cfg.val_fraction,
                                  seed=cfg.seed, patient_pattern=cfg.patient_pattern)
    else:
        root: Path | None
        if cfg.datastore is not None:
            manifest, root = datastore_manifest(Path(cfg.datastore)), Path(cfg.datastore)
        else:
            assert cfg.manifest is not None
            manifest = Path(cfg.manifest)
            root = Path(cfg.root) if cfg.root else None
        records = load_manifest_records(manifest, root, cfg.window)
        train, val = split_records(records, cfg.val_fraction, cfg.seed)
    if not train:
        raise InputError("the split left no training data: add data or lower --val-fraction")
    if not val:
        log.warning("only one patient: validating on the training data (no held-out patient)")
        return train, train, True
    return train, val, False


# ---------------------------------------------------------------------------------- helpers


def _precision(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
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


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _make_scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer) -> Any:
    s = Scheduler(cfg.scheduler)
    if s == Scheduler.PLATEAU:
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="max", factor=cfg.gamma, patience=max(1, cfg.patience // 2 or 2))
    if s == Scheduler.COSINE:
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    if s == Scheduler.STEP:
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, cfg.step_size), gamma=cfg.gamma)
    return None


def _run_sample(model: Any, sample: Sample, size: int, device: torch.device,
                dtype: torch.dtype | None, cfg: TrainConfig) -> Any:
    h, w = sample.truth.shape[1:]
    frames = frames_to_tensor(sample.frames, size)
    inputs = prompt_inputs(sample.prompt, int(h), int(w), size)
    with _autocast(device, dtype):
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
            res = _run_sample(model, s, size, device, dtype, cfg)
            losses.append(float(res.total))
            ious.append(res.clip_iou)
            dices.append(res.clip_dice)
            if on_step is not None:
                on_step(i + 1)
    iou = float(np.mean(ious)) if ious else 0.0
    dice = float(np.mean(dices)) if dices else 0.0
    return {"val_loss": float(np.mean(losses)) if losses else 0.0, "val_iou": iou,
            "val_dice": dice}


def _rng_states(ds: ClipDataset) -> dict[str, Any]:
    out: dict[str, Any] = {"dataset": ds.rng_state(), "torch": torch.get_rng_state(),
                           "python": random.getstate()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_states(ds: ClipDataset, states: dict[str, Any]) -> None:
    ds.set_rng_state(states["dataset"])
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _preprocessing(cfg: TrainConfig, size: int) -> dict[str, Any]:
    from segloop.engines.sam2.preprocess import IMAGENET_MEAN, IMAGENET_STD

    return {"image_size": size, "window": cfg.window, "resize": "bicubic",
            "scale": "CT window or 0.5-99.5 percentiles to uint8, /255",
            "mean": IMAGENET_MEAN.tolist(), "std": IMAGENET_STD.tolist(),
            "axes": "slices (H=y, W=x) of the canonical RAS volume; 2D images as read"}


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


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


# ---------------------------------------------------------------------------------- outputs


class _Logger:
    """metrics.csv always; TensorBoard when installed; W&B / MLflow when installed and asked."""

    def __init__(self, cfg: TrainConfig, run_dir: Path) -> None:
        self.csv_path = run_dir / "metrics.csv"
        self.tb: Any = None
        self.wandb: Any = None
        self.mlflow: Any = None
        self.backends = ["csv"]
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            self.backends.append("tensorboard")
        except ImportError:
            log.info("tensorboard is not installed: scalars go to metrics.csv only")
        if cfg.wandb:
            try:
                import wandb  # type: ignore[import-not-found]

                self.wandb = wandb.init(project="segloop", name=cfg.run_name, config=cfg.to_dict())
                self.backends.append("wandb")
            except ImportError:
                log.warning("--wandb: the wandb package is not installed; skipped")
        if cfg.mlflow:
            try:
                import mlflow  # type: ignore[import-not-found]

                mlflow.start_run(run_name=cfg.run_name)
                mlflow.log_params({k: str(v) for k, v in cfg.to_dict().items()})
                self.mlflow = mlflow
                self.backends.append("mlflow")
            except ImportError:
                log.warning("--mlflow: the mlflow package is not installed; skipped")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(values, step=step)
        if self.mlflow is not None:
            self.mlflow.log_metrics(values, step=step)

    def epoch_rows(self, history: list[dict[str, Any]]) -> None:
        if not history:
            return
        keys = list(history[0])
        tmp = self.csv_path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            for row in history:
                w.writerow({k: row.get(k) for k in keys})
        tmp.replace(self.csv_path)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
        if self.mlflow is not None:
            self.mlflow.end_run()


def plot_curves(history: list[dict[str, Any]], path: Path,
                before: dict[str, float] | None = None) -> None:
    """Loss and IoU per epoch (train and validation; ``before``: the base model's validation
    scores, drawn at epoch 0) as a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5))
    ax1, ax2 = fig.subplots(1, 2)
    ep = [h["epoch"] for h in history]
    ax1.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    v0 = [0] if before else []
    ax1.plot(v0 + ep, ([before["val_loss"]] if before else []) + [h["val_loss"] for h in history],
             "s-", label="validation")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(ep, [h["train_iou"] for h in history], "o-", label="train")
    ax2.plot(v0 + ep, ([before["val_iou"]] if before else []) + [h["val_iou"] for h in history],
             "s-", label="validation")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("IoU")
    ax2.set_ylim(0, 1)
    ax2.legend()
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)


def _save_transformers_folder(model: Any, model_cfg: dict[str, Any], folder: Path
                              ) -> dict[str, torch.Tensor]:
    """Write ``model.safetensors`` + ``config.json`` into ``folder``; returns the fp32 state dict."""
    from safetensors.torch import save_file
    from transformers import Sam2VideoConfig

    sd = {k: v.detach().to("cpu", torch.float32).contiguous().clone()
          for k, v in model.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    Sam2VideoConfig(**model_cfg).save_pretrained(str(folder))
    return sd


def _export(model: Any, model_cfg: dict[str, Any], run_dir: Path) -> None:
    from safetensors.torch import save_file

    sd = _save_transformers_folder(model, model_cfg, run_dir / "model")
    enc = {k: v for k, v in sd.items() if k.startswith("vision_encoder.")}
    save_file(enc, str(run_dir / "encoder.safetensors"), metadata={"format": "pt"})
    (run_dir / "encoder_config.json").write_text(json.dumps(
        {"vision_config": model_cfg.get("vision_config", {}),
         "prefix": "vision_encoder.", "tensors": len(enc)}, indent=1))


# ---------------------------------------------------------------------------------- the loop


def train(cfg: TrainConfig, *, resume: bool = False,
          on_progress: Callable[[Progress], None] | None = None,
          data: tuple[list[ImageRecord], list[ImageRecord], bool] | None = None) -> TrainResult:
    """Run (or resume) the training described by ``cfg``; see the module docstring.

    ``data``: already prepared (train, val, val_is_train) records (default:
    :func:`prepare_data`). ``resume``: continue from ``<out>/latest.pt`` when it exists.
    """
    cfg = resolve_config(cfg)
    torch.set_num_threads(max(1, int(cfg.threads)))
    run_dir = cfg.out_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    train_recs, val_recs, val_is_train = data if data is not None else prepare_data(cfg)
    ds = ClipDataset(train_recs, cfg.clip_length if cfg.is_3d else 1,
                     np.random.default_rng(cfg.seed), cfg.box_jitter)
    val_ds = ClipDataset(val_recs, cfg.clip_length if cfg.is_3d else 1,
                         np.random.default_rng(cfg.seed + 1), cfg.box_jitter)
    val_samples = val_ds.validation_samples()
    if cfg.val_samples > 0:
        val_samples = val_samples[:cfg.val_samples]

    device = resolve_device(cfg.device)
    dtype = _precision(cfg, device)
    model, model_cfg, base_name = load_base_model(cfg.model, cfg.image_size, device, cfg.seed)
    size = int(model.config.image_size)
    parts = [Part(p) for p in cfg.parts or []]
    n_train, n_total = set_trainable(model, parts)
    if n_train == 0:
        raise InputError("nothing to train: --train selected no parameter")
    if cfg.grad_checkpointing:
        n_ck = enable_gradient_checkpointing(model)
        log.info("gradient checkpointing on %d layers", n_ck)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = _make_scheduler(cfg, opt)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None

    history: list[dict[str, Any]] = []
    step_losses: list[float] = []
    start_epoch, global_step, bad_epochs = 1, 0, 0
    best: dict[str, Any] = {"val_iou": -1.0, "epoch": 0}
    before: dict[str, float] | None = None
    latest = run_dir / "latest.pt"
    if resume and latest.is_file():
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
        model.load_state_dict(ck["model"], strict=True)
        opt.load_state_dict(ck["optimizer"])
        if sched is not None and ck.get("scheduler") is not None:
            sched.load_state_dict(ck["scheduler"])
        if scaler is not None and ck.get("scaler") is not None:
            scaler.load_state_dict(ck["scaler"])
        _set_rng_states(ds, ck["rng"])
        history, step_losses = list(ck["history"]), list(ck["step_losses"])
        start_epoch, global_step = int(ck["epoch"]) + 1, int(ck["step"])
        bad_epochs, best, before = int(ck["bad_epochs"]), dict(ck["best"]), ck.get("before")
        log.info("resumed from %s at epoch %d (step %d)", latest, start_epoch, global_step)
    elif resume:
        log.warning("--resume: no %s yet; starting a new run", latest)
    elif latest.is_file():
        log.warning("%s holds an earlier run: starting over (use --resume to continue it)",
                    run_dir)

    (run_dir / "config.json").write_text(json.dumps(
        {"train": cfg.to_dict(), "model": model_cfg, "preprocessing": _preprocessing(cfg, size),
         "base_model": base_name, "trainable_parameters": n_train, "parameters": n_total},
        indent=1, default=str))
    logger = _Logger(cfg, run_dir)
    log.info("training %s: %d/%d parameters (%s), %d train items, %d val samples, %s%s",
             base_name, n_train, n_total, ",".join(cfg.parts or []), len(ds), len(val_samples),
             device, f" {dtype}" if dtype else "")

    def report(p: Progress) -> None:
        if on_progress is not None:
            on_progress(p)

    def validate(epoch: int) -> dict[str, float]:
        return evaluate_samples(
            model, val_samples, size, device, dtype, cfg,
            on_step=lambda i: report(Progress("val", epoch, cfg.epochs, i, len(val_samples))))

    # a random start (--model tiny) is no registry model: keep it, so that `segloop eval` can
    # compare the run with where it started (registered as ENGINE@RUN.base)
    if base_name == "tiny" and not (run_dir / "base").is_dir():
        _save_transformers_folder(model, model_cfg, run_dir / "base")

    t_start = time.time()
    if before is None:
        before = validate(0)
        logger.scalars(0, before)
    stopped_early = False
    try:
        for epoch in range(start_epoch, cfg.epochs + 1):
            t0 = time.time()
            order = ds.epoch_order(cfg.samples_per_epoch)
            ep_losses: list[float] = []
            ep_ious: list[float] = []
            opt.zero_grad(set_to_none=True)
            for i, idx in enumerate(order):
                sample = ds.sample(idx)
                res = _run_sample(model, sample, size, device, dtype, cfg)
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
                step_losses.append(value)
                ep_ious.append(res.clip_iou)
                if (i + 1) % cfg.accumulate == 0 or i + 1 == len(order):
                    if scaler is not None:
                        scaler.unscale_(opt)
                    if cfg.clip_grad > 0:
                        torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
                    if scaler is not None:
                        scaler.step(opt)
                        scaler.update()
                    else:
                        opt.step()
                    opt.zero_grad(set_to_none=True)
                    global_step += 1
                    logger.scalars(global_step, {"train/loss": value,
                                                 "train/lr": opt.param_groups[0]["lr"]})
                report(Progress("train", epoch, cfg.epochs, i + 1, len(order), loss=value))
            scores = validate(epoch)
            lr = float(opt.param_groups[0]["lr"])
            row = {"epoch": epoch, "step": global_step,
                   "train_loss": float(np.mean(ep_losses)) if ep_losses else 0.0,
                   "train_iou": float(np.mean(ep_ious)) if ep_ious else 0.0,
                   **scores, "lr": lr, "seconds": round(time.time() - t0, 3)}
            history.append(row)
            logger.scalars(global_step, {f"epoch/{k}": float(v) for k, v in row.items()
                                         if k not in ("epoch", "step")})
            logger.epoch_rows(history)
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sched.step(scores["val_iou"])
            elif sched is not None:
                sched.step()
            improved = scores["val_iou"] > float(best["val_iou"]) + 1e-6
            if improved:
                best = {**scores, "epoch": epoch, "step": global_step}
                bad_epochs = 0
            else:
                bad_epochs += 1
            state = {
                "format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "model_config": model_cfg,
                "preprocessing": _preprocessing(cfg, size), "base_model": base_name,
                "epoch": epoch, "step": global_step, "scores": scores,
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            }
            if improved:
                _atomic_save(state, run_dir / "best.pt")
            _atomic_save({**state, "optimizer": opt.state_dict(),
                          "scheduler": sched.state_dict() if sched is not None else None,
                          "scaler": scaler.state_dict() if scaler is not None else None,
                          "rng": _rng_states(ds), "history": history, "step_losses": step_losses,
                          "best": best, "bad_epochs": bad_epochs, "before": before}, latest)
            report(Progress("epoch", epoch, cfg.epochs, epoch, cfg.epochs, loss=row["train_loss"],
                            metrics=scores))
            if cfg.patience > 0 and bad_epochs >= cfg.patience:
                log.info("early stop at epoch %d: no better val IoU for %d epochs", epoch,
                         bad_epochs)
                stopped_early = True
                break
    finally:
        logger.close()

    # final outputs from the best weights
    best_model, _ = load_checkpoint(run_dir / "best.pt", device)
    _export(best_model, model_cfg, run_dir)
    if history:
        plot_curves(history, run_dir / "curves.png", before)
    model_name = None
    summary: dict[str, Any] = {
        "run": cfg.run_name, "base_model": base_name, "engine": cfg.base_engine,
        "device": str(device), "precision": str(dtype or "fp32"), "parts": cfg.parts,
        "train_items": len(ds), "val_samples": len(val_samples), "val_is_train": val_is_train,
        "train_patients": sorted({r.patient_id for r in train_recs}),
        "val_patients": sorted({r.patient_id for r in val_recs}),
        "epochs_run": len(history), "steps": global_step, "stopped_early": stopped_early,
        "seconds": round(time.time() - t_start, 2), "before": before, "best": best,
        "final": history[-1] if history else None, "logging": logger.backends,
        "files": {"best": "best.pt", "latest": "latest.pt", "model": "model/",
                  "encoder": "encoder.safetensors", "curves": "curves.png",
                  "base": "base/ (random start only)",
                  "metrics": "metrics.csv"},
    }
    if cfg.register:
        from segloop.models.versions import register_run, run_model_name

        model_name = run_model_name(cfg.base_engine, str(cfg.run_name))
        register_run(run_dir / "model", model_name, base_model=base_name, engine=cfg.base_engine,
                     config=model_cfg, run_dir=run_dir,
                     val_scores={k: float(best[k]) for k in ("val_iou", "val_dice", "val_loss")
                                 if k in best})
        summary["registered_as"] = model_name
        if (run_dir / "base").is_dir():
            base_reg = run_model_name(cfg.base_engine, f"{cfg.run_name}.base")
            register_run(run_dir / "base", base_reg, base_model=base_name, engine=cfg.base_engine,
                         config=model_cfg, run_dir=run_dir,
                         val_scores={k: float(before[k]) for k in ("val_iou", "val_dice", "val_loss")
                                     if k in before})
            summary["base_registered_as"] = base_reg
    if float(best.get("val_iou", -1.0)) <= float(before["val_iou"]):
        log.warning("the best epoch (val IoU %.4f) is not better than the base model (%.4f)",
                    float(best.get("val_iou", -1.0)), float(before["val_iou"]))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return TrainResult(run_dir=run_dir, summary=summary, history=history,
                       step_losses=step_losses, model_name=model_name)
