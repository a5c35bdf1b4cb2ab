"""Fine-tuning SAM-Med3D the way the seed project does: 128³ patches, simulated clicks, BCE + Dice.

One sample = a patch around the target (centre jittered), z-normalised as at inference. Each
step runs the official trainer's click simulation: a first positive click inside the target,
then ``clicks - 1`` more, each drawn from the current error region (a positive click in a
missed voxel or a negative one in a false positive, as ``random_sample_next_click``), every
prediction fed back as the low-res mask prompt; the loss (BCE + Dice on the 128³ logits) is
summed over the clicks. Options mirror the seed's ``train.py`` (see :class:`SamMed3DTrainOptions`).

Outputs in ``output_dir``: ``latest_model.pth`` (with optimizer/scheduler state: ``resume``),
``best_model.pth`` (best validation Dice), ``sam_encoder.pth``
(``{"image_encoder_state_dict": ...}`` in the official names without the ``image_encoder.``
prefix: what a BLIP-2 visual encoder loads), ``config.json``, ``training_summary_<time>.json``,
``tensorboard/`` (when installed; W&B when ``use_wandb`` and the package is there); with
``run_name`` the best model is registered as ``sammed3d@<run_name>`` (served and evaluated like
the other fine-tuned runs). Rows whose
mask is empty (``ich`` = 0) have no target to click on and are skipped (counted in the summary).
Imports torch; must not import the CLI or the API.
"""

from __future__ import annotations

import json
import logging
import math
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from segloop.engines.sammed3d.convert import load_model_file, ours_to_official, save_official
from segloop.engines.sammed3d.model import SamMed3D, SamMed3DConfig
from segloop.engines.sammed3d.preprocess import PatchGrid, znormalise
from segloop.errors import InputError
from segloop.train.sammed3d.data import SeedRow, load_image, load_mask

__all__ = ["SamMed3DTrainOptions", "Sample", "SchedulerType", "train_sammed3d"]

log = logging.getLogger(__name__)


class SchedulerType(StrEnum):
    """Learning-rate schedules of the seed project."""

    COSINE = "cosine"
    STEP = "step"
    PLATEAU = "reduce_on_plateau"


@dataclass
class SamMed3DTrainOptions:
    """The seed's options (its names, as attributes); ``model`` = registry name or ``"tiny"``."""

    output_dir: Path
    model: str = "sam-med3d-turbo"
    epochs: int = 200
    batch_size: int = 2
    lr: float = 1e-4
    weight_decay: float = 0.01
    use_mixed_precision: bool = False
    gradient_accumulation_steps: int = 1
    scheduler_type: SchedulerType = SchedulerType.COSINE
    patience: int = 0
    max_grad_norm: float = 1.0
    freeze_encoder: bool = False
    use_gradient_checkpointing: bool = False
    clicks: int = 5
    use_wandb: bool = False
    wandb_project: str = "sam-med3d"
    log_images: bool = False
    log_freq: int = 10
    device: str = "auto"
    seed: int = 0
    resume: bool = False
    #: register best_model.pth as the model ``sammed3d@<run_name>`` (None: don't)
    run_name: str | None = None

    def warnings(self) -> list[str]:
        """Settings that are legal but probably not meant (printed before training)."""
        w = []
        if self.batch_size * self.gradient_accumulation_steps > 32:
            w.append(f"effective batch {self.batch_size * self.gradient_accumulation_steps} is large")
        if self.lr > 1e-3:
            w.append(f"lr {self.lr} is high for fine-tuning a pretrained SAM-Med3D")
        if self.use_mixed_precision and self.device == "cpu":
            w.append("mixed precision on the CPU runs bf16 autocast (slow on CPUs without bf16)")
        if self.clicks < 1:
            w.append("clicks < 1: using 1")
        return w


@dataclass
class Sample:
    """One training patch: image ``(S, S, S)`` z-normalised, target bool, and its row."""

    image: npt.NDArray[np.float32]
    target: npt.NDArray[np.bool_]
    row: SeedRow


def make_samples(rows: list[SeedRow], size: int, rng: np.random.Generator, jitter: int
                 ) -> tuple[list[Sample], int]:
    """Patches around each row's target; returns the samples and the number of empty masks."""
    out, empty = [], 0
    for r in rows:
        if r.mask is None:
            raise InputError(f"{r.where()}: no mask")
        img, spacing = load_image(r.image)
        m = load_mask(r.mask)
        if m.shape != img.shape:
            raise InputError(f"{r.where()}: mask shape {m.shape} != image {img.shape}")
        if not m.any():
            empty += 1
            continue
        nz = np.argwhere(m)
        shift = rng.integers(-jitter, jitter + 1, 3) * (1.5 / np.asarray(spacing))
        centre = (nz.min(0) + nz.max(0)) / 2 + shift
        shape = (int(img.shape[0]), int(img.shape[1]), int(img.shape[2]))
        g = PatchGrid.around(shape, spacing, centre, 1.5, size)
        out.append(Sample(znormalise(g.sample(img)), g.sample(m.astype(np.float32)) > 0.5, r))
    return out, empty


def next_click(pred: torch.Tensor, gt: torch.Tensor, gen: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """One click per batch item from the error region (a voxel of gt when there is no error)."""
    pts, labs = [], []
    for p, g in zip(pred, gt, strict=True):
        fn, fp = g & ~p, ~g & p
        err = fn | fp
        cand = torch.nonzero(err if err.any() else g)
        if not len(cand):
            cand = torch.nonzero(torch.ones_like(g))
        c = cand[int(torch.randint(len(cand), (1,), generator=gen))]
        pts.append(c.float())
        labs.append(torch.tensor(int(bool(fn[tuple(c)]) or not err.any()), dtype=torch.int64))
    return torch.stack(pts)[:, None], torch.stack(labs)[:, None]


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    prob = torch.sigmoid(logits)
    inter = (prob * target).flatten(1).sum(1)
    dice = 1 - (2 * inter + 1) / (prob.flatten(1).sum(1) + target.flatten(1).sum(1) + 1)
    return F.binary_cross_entropy_with_logits(logits, target) + dice.mean()


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    s = float(a.sum() + b.sum())
    return 1.0 if s == 0 else float(2 * (a & b).sum()) / s


def _run_clicks(model: SamMed3D, image: torch.Tensor, target: torch.Tensor, clicks: int,
                gen: torch.Generator, freeze_encoder: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The simulated click loop: summed loss and the final (B, S, S, S) bool prediction."""
    b, n = image.shape[0], model.config.low_res
    if freeze_encoder:
        with torch.no_grad():
            emb = model.encode(image)
    else:
        emb = model.encode(image)
    low = torch.zeros(b, 1, n, n, n, device=image.device)
    pred = torch.zeros_like(target[:, 0], dtype=torch.bool)
    gt = target[:, 0] > 0.5
    pts = torch.zeros(b, 0, 3, device=image.device)
    labs = torch.zeros(b, 0, dtype=torch.int64, device=image.device)
    total = torch.zeros((), device=image.device)
    for _ in range(max(1, clicks)):
        p, lab = next_click(pred.cpu(), gt.cpu(), gen)
        pts = torch.cat([pts, p.to(image.device)], 1)
        labs = torch.cat([labs, lab.to(image.device)], 1)
        low, _ = model.decode(emb, pts, labs, low.detach())
        logits = model.upscale(low).float()
        total = total + _loss(logits, target)
        pred = (logits[:, 0] > 0).detach()
    return total, pred


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_sammed3d(opts: SamMed3DTrainOptions, train_rows: list[SeedRow], val_rows: list[SeedRow],
                   on_log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train; returns the summary written to ``training_summary_<time>.json``."""
    say = on_log or log.info
    torch.manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    gen = torch.Generator().manual_seed(opts.seed)
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if opts.device == "auto"
                       else opts.device)
    out = Path(opts.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if opts.model == "tiny":
        cfg = SamMed3DConfig.tiny()
        model = SamMed3D(cfg)
    else:
        from segloop.models.store import checkpoint_path, is_available, model_config, not_cached_message

        if not is_available(opts.model):
            raise InputError(f"{opts.model}: {not_cached_message(opts.model)}")
        cfg = SamMed3DConfig.from_dict(model_config(opts.model))
        model = load_model_file(checkpoint_path(opts.model), cfg)
    model.to(dev)
    model.image_encoder.checkpointing = opts.use_gradient_checkpointing
    if opts.freeze_encoder:
        model.image_encoder.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    sched: Any
    if opts.scheduler_type is SchedulerType.COSINE:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=max(1, opts.epochs))
    elif opts.scheduler_type is SchedulerType.STEP:
        sched = torch.optim.lr_scheduler.StepLR(optim, step_size=max(1, opts.epochs // 4), gamma=0.5)
    else:
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(optim, mode="max", patience=3, factor=0.5)
    start, best, stale, history = 0, -1.0, 0, []
    latest = out / "latest_model.pth"
    if opts.resume:
        if not latest.is_file():
            raise InputError(f"nothing to resume: {latest} does not exist")
        ck = torch.load(latest, map_location="cpu", weights_only=True)
        from segloop.engines.sammed3d.convert import official_to_ours

        model.load_state_dict(official_to_ours(ck["model_state_dict"]), strict=True)
        optim.load_state_dict(ck["optimizer_state_dict"])
        sched.load_state_dict(ck["scheduler_state_dict"])
        start, best = int(ck["epoch"]), float(ck["best_dice"])
        history = json.loads(ck.get("history", "[]"))
        say(f"resumed after epoch {start} (best val Dice {best:.4f})")
    (out / "config.json").write_text(json.dumps(
        {"options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
         "model_config": cfg.to_dict(), "train_rows": len(train_rows), "val_rows": len(val_rows)},
        indent=2, default=str))
    writer: Any = None
    wandb_run: Any = None
    if opts.use_wandb:
        try:
            import wandb  # type: ignore[import-not-found]

            wandb_run = wandb.init(project=opts.wandb_project, dir=str(out), config=asdict(opts))
        except ImportError:
            say("wandb is not installed: logging to TensorBoard instead")
    if wandb_run is None:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            writer = None
    size = cfg.image_size
    train_s, empty_t = make_samples(train_rows, size, rng, jitter=size // 16)
    val_s, empty_v = make_samples(val_rows, size, np.random.default_rng(opts.seed + 1), jitter=0)
    if not train_s:
        raise InputError("no training row has a non-empty mask: nothing to click on")
    say(f"{len(train_s)} training and {len(val_s)} validation patches "
        f"({empty_t + empty_v} rows with empty masks skipped)")
    use_amp = opts.use_mixed_precision
    t_start = time.perf_counter()
    step = 0
    for epoch in range(start, opts.epochs):
        t0 = time.perf_counter()
        model.train()
        order = rng.permutation(len(train_s))
        losses = []
        optim.zero_grad(set_to_none=True)
        nb = math.ceil(len(order) / opts.batch_size)
        for bi in range(nb):
            idx = order[bi * opts.batch_size:(bi + 1) * opts.batch_size]
            img = torch.from_numpy(np.stack([train_s[i].image for i in idx]))[:, None].to(dev)
            tgt = torch.from_numpy(np.stack([train_s[i].target for i in idx]))[:, None].float().to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
                loss, _ = _run_clicks(model, img, tgt, opts.clicks, gen, opts.freeze_encoder)
            (loss / opts.gradient_accumulation_steps).backward()
            if (bi + 1) % opts.gradient_accumulation_steps == 0 or bi + 1 == nb:
                if opts.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, opts.max_grad_norm)
                optim.step()
                optim.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            step += 1
            if writer is not None and step % max(1, opts.log_freq) == 0:
                writer.add_scalar("train/loss", losses[-1], step)
        model.eval()
        dices = []
        with torch.no_grad():
            for j, s in enumerate(val_s):
                img = torch.from_numpy(s.image)[None, None].to(dev)
                tgt = torch.from_numpy(s.target)[None, None].float().to(dev)
                _, pred = _run_clicks(model, img, tgt, opts.clicks, gen, True)
                dices.append(_dice(pred[0].cpu(), torch.from_numpy(s.target)))
                if opts.log_images and writer is not None and j == 0:
                    z = s.target.shape[2] // 2
                    sl = s.image[:, :, z]
                    writer.add_image("val/image", (sl - sl.min()) / (np.ptp(sl) + 1e-6), epoch,
                                     dataformats="HW")
                    writer.add_image("val/pred", pred[0, :, :, z].float().cpu().numpy(), epoch,
                                     dataformats="HW")
        val_dice = float(np.mean(dices)) if dices else float("nan")
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(val_dice if dices else -float(np.mean(losses)))
        else:
            sched.step()
        secs = time.perf_counter() - t0
        rec = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_dice": val_dice,
               "lr": optim.param_groups[0]["lr"], "seconds": secs, "peak_mb": _peak_mb(dev)}
        history.append(rec)
        eta = secs * (opts.epochs - epoch - 1)
        say(f"epoch {epoch + 1}/{opts.epochs}: loss {rec['train_loss']:.4f} val Dice {val_dice:.4f}"
            f" ({secs:.1f} s, peak {rec['peak_mb']:.0f} MiB, ~{eta / 60:.1f} min left)")
        if writer is not None:
            writer.add_scalar("val/dice", val_dice, epoch + 1)
        if wandb_run is not None:
            wandb_run.log(rec)
        improved = dices and val_dice > best
        if improved:
            best, stale = val_dice, 0
            save_official(model, out / "best_model.pth", epoch=epoch + 1, val_dice=val_dice,
                          config=json.dumps(cfg.to_dict()))
        else:
            stale += 1
        save_official(model, latest, epoch=epoch + 1, best_dice=best,
                      optimizer_state_dict=optim.state_dict(), scheduler_state_dict=sched.state_dict(),
                      history=json.dumps(history), config=json.dumps(cfg.to_dict()))
        if opts.patience and stale >= opts.patience:
            say(f"early stop: no better val Dice for {stale} epochs")
            break
    if not (out / "best_model.pth").exists():
        save_official(model, out / "best_model.pth", epoch=len(history), val_dice=best)
    enc = ours_to_official({f"image_encoder.{k}": v.detach().cpu()
                            for k, v in model.image_encoder.state_dict().items()})
    torch.save({"image_encoder_state_dict": {k.removeprefix("image_encoder."): v for k, v in enc.items()},
                "config": json.dumps(cfg.to_dict())}, out / "sam_encoder.pth")
    summary = {"epochs_run": len(history), "best_val_dice": best, "history": history,
               "train_patches": len(train_s), "val_patches": len(val_s),
               "empty_masks_skipped": empty_t + empty_v, "seconds": time.perf_counter() - t_start,
               "device": str(dev), "peak_mb": _peak_mb(dev)}
    if opts.run_name:
        from segloop.models.versions import register_run, run_model_name

        name = run_model_name("sammed3d", opts.run_name)
        register_run(out / "best_model.pth", name, base_model=opts.model, engine="sammed3d",
                     config=cfg.to_dict(), val_scores={"val_dice": best}, run_dir=out)
        summary["model"] = name
        say(f"registered as {name}: segloop segment ... --engine {name}")
    stamp = time.strftime("%Y%m%d_%H%M%S")
    (out / f"training_summary_{stamp}.json").write_text(json.dumps(summary, indent=2))
    if writer is not None:
        writer.close()
    if wandb_run is not None:
        wandb_run.finish()
    return summary
