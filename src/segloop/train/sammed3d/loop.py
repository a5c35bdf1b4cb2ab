"""Fine-tuning SAM-Med3D the way the seed project does: 128³ patches, simulated clicks, BCE + Dice.

One sample = a patch around the target (centre jittered anew every epoch), z-normalised as at
inference, prepared by a ``DataLoader`` with ``num_workers`` processes
(:mod:`segloop.train.sammed3d.dataset`); each step runs the official trainer's click simulation
(:mod:`segloop.train.sammed3d.steps`). Options mirror the seed's ``train.py``
(:class:`SamMed3DTrainOptions`).

With ``visual_tokens`` = N > 0 a :class:`~segloop.engines.sammed3d.tokens.VisualTokenHead`
(``visual_token_count`` tokens of width N) is trained next to the model on the *detached*
image embedding, with its own gradient clipping, so the segmentation model's training is the
same with and without it; its loss is logged as ``token_loss``.

Outputs in ``output_dir``: ``latest_model.pth`` (with optimizer/scheduler state: ``resume``),
``best_model.pth`` (best validation Dice), ``sam_encoder.pth``
(``{"image_encoder_state_dict": ...}`` in the official names without the ``image_encoder.``
prefix: what a BLIP-2 visual encoder loads; plus the visual-token head when trained),
``config.json``, ``training_summary_<time>.json``, and W&B or TensorBoard logs
(:mod:`segloop.train.sammed3d.logs`); with ``run_name`` the best model is registered as
``sammed3d@<run_name>``. Rows whose mask is empty (``ich`` = 0) have no target to click on and
are skipped (counted in the summary).
Imports torch; must not import the CLI or the API.
"""

from __future__ import annotations

import json
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segloop.engines.sammed3d.convert import load_model_file, ours_to_official, save_official
from segloop.engines.sammed3d.model import SamMed3D, SamMed3DConfig
from segloop.engines.sammed3d.tokens import CONFIG_KEY, STATE_KEY, VisualTokenConfig, VisualTokenHead
from segloop.errors import InputError
from segloop.train.sammed3d.data import SeedRow
from segloop.train.sammed3d.dataset import PatchDataset, epoch_batches, iterate, scan_rows
from segloop.train.sammed3d.logs import SeedRunLog
from segloop.train.sammed3d.steps import dice, run_clicks

__all__ = ["SamMed3DTrainOptions", "SchedulerType", "train_sammed3d"]

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
    #: worker processes preparing patches (0: in the training process)
    num_workers: int = 0
    #: width of the visual tokens (0: no visual-token head)
    visual_tokens: int = 0
    #: number of visual tokens (learned queries)
    visual_token_count: int = 32
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
        if self.visual_token_count != 32 and not self.visual_tokens:
            w.append("--visual_token_count without --visual_tokens N: no visual-token head is trained")
        return w

    def json_dict(self) -> dict[str, Any]:
        """The options as JSON-able values (config.json, the W&B config)."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load_model(opts: SamMed3DTrainOptions) -> tuple[SamMed3D, SamMed3DConfig]:
    if opts.model == "tiny":
        cfg = SamMed3DConfig.tiny()
        return SamMed3D(cfg), cfg
    from segloop.models.store import checkpoint_path, is_available, model_config, not_cached_message

    if not is_available(opts.model):
        raise InputError(f"{opts.model}: {not_cached_message(opts.model)}")
    cfg = SamMed3DConfig.from_dict(model_config(opts.model))
    return load_model_file(checkpoint_path(opts.model), cfg), cfg


def _make_head(opts: SamMed3DTrainOptions, cfg: SamMed3DConfig) -> VisualTokenHead | None:
    if opts.visual_tokens <= 0:
        return None
    vcfg = VisualTokenConfig(dim=opts.visual_tokens, count=opts.visual_token_count,
                             in_dim=cfg.prompt_dim, grid=cfg.grid, patch=cfg.patch_size)
    with torch.random.fork_rng(devices=[]):  # the model's own random stream stays untouched
        torch.manual_seed(opts.seed + 1)
        return VisualTokenHead(vcfg)


def _scheduler(opts: SamMed3DTrainOptions, optim: torch.optim.Optimizer) -> Any:
    if opts.scheduler_type is SchedulerType.COSINE:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=max(1, opts.epochs))
    if opts.scheduler_type is SchedulerType.STEP:
        return torch.optim.lr_scheduler.StepLR(optim, step_size=max(1, opts.epochs // 4), gamma=0.5)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optim, mode="max", patience=3, factor=0.5)


def _head_extra(head: VisualTokenHead | None) -> dict[str, Any]:
    if head is None:
        return {}
    return {STATE_KEY: {k: v.detach().cpu() for k, v in head.state_dict().items()},
            CONFIG_KEY: head.config.to_json()}


def _save_encoder(model: SamMed3D, head: VisualTokenHead | None, cfg: SamMed3DConfig,
                  path: Path) -> None:
    enc = ours_to_official({f"image_encoder.{k}": v.detach().cpu()
                            for k, v in model.image_encoder.state_dict().items()})
    torch.save({"image_encoder_state_dict": {k.removeprefix("image_encoder."): v for k, v in enc.items()},
                "config": json.dumps(cfg.to_dict()), **_head_extra(head)}, path)


def _resume(latest: Path, model: SamMed3D, head: VisualTokenHead | None,
            optim: torch.optim.Optimizer, sched: Any) -> tuple[int, float, list[dict[str, Any]]]:
    if not latest.is_file():
        raise InputError(f"nothing to resume: {latest} does not exist")
    ck = torch.load(latest, map_location="cpu", weights_only=True)
    from segloop.engines.sammed3d.convert import official_to_ours

    model.load_state_dict(official_to_ours(ck["model_state_dict"]), strict=True)
    saved = ck.get(CONFIG_KEY)
    mine = head.config.to_json() if head is not None else None
    if saved != mine:
        raise InputError(f"{latest} was trained with visual-token head {saved or 'none'}, this run"
                         f" asks for {mine or 'none'}: give the same --visual_tokens options to resume")
    if head is not None:
        head.load_state_dict(ck[STATE_KEY], strict=True)
    optim.load_state_dict(ck["optimizer_state_dict"])
    sched.load_state_dict(ck["scheduler_state_dict"])
    return int(ck["epoch"]), float(ck["best_dice"]), list(json.loads(ck.get("history", "[]")))


def train_sammed3d(opts: SamMed3DTrainOptions, train_rows: list[SeedRow], val_rows: list[SeedRow],
                   on_log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train; returns the summary written to ``training_summary_<time>.json``."""
    say = on_log or log.info
    torch.manual_seed(opts.seed)
    gen = torch.Generator().manual_seed(opts.seed)
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if opts.device == "auto"
                       else opts.device)
    out = Path(opts.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, cfg = _load_model(opts)
    head = _make_head(opts, cfg)
    model.to(dev)
    model.image_encoder.checkpointing = opts.use_gradient_checkpointing
    if opts.freeze_encoder:
        model.image_encoder.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = [{"params": params}]
    head_params: list[torch.nn.Parameter] = []
    if head is not None:
        head.to(dev)
        head_params = list(head.parameters())
        groups.append({"params": head_params})
    optim = torch.optim.AdamW(groups, lr=opts.lr, weight_decay=opts.weight_decay)
    sched = _scheduler(opts, optim)
    start, best, stale = 0, -1.0, 0
    history: list[dict[str, Any]] = []
    latest = out / "latest_model.pth"
    if opts.resume:
        start, best, history = _resume(latest, model, head, optim, sched)
        say(f"resumed after epoch {start} (best val Dice {best:.4f})")
    (out / "config.json").write_text(json.dumps(
        {"options": opts.json_dict(), "model_config": cfg.to_dict(),
         "visual_token_head": json.loads(head.config.to_json()) if head is not None else None,
         "train_rows": len(train_rows), "val_rows": len(val_rows)}, indent=2, default=str))
    runlog = SeedRunLog(out, opts.use_wandb, opts.wandb_project, opts.json_dict(), say)
    size = cfg.image_size
    train_t, empty_t = scan_rows(train_rows)
    val_t, empty_v = scan_rows(val_rows)
    if not train_t:
        raise InputError("no training row has a non-empty mask: nothing to click on")
    train_ds = PatchDataset(train_t, size, opts.seed, jitter=size // 16)
    val_ds = PatchDataset(val_t, size, opts.seed + 1, jitter=0)
    say(f"{len(train_ds)} training and {len(val_ds)} validation patches "
        f"({empty_t + empty_v} rows with empty masks skipped; {opts.num_workers} loader workers)")
    use_amp = opts.use_mixed_precision
    accum = max(1, opts.gradient_accumulation_steps)
    t_start = time.perf_counter()
    step = start * -(-len(train_ds) // max(1, opts.batch_size))
    for epoch in range(start, opts.epochs):
        t0 = time.perf_counter()
        model.train()
        train_ds.set_epoch(epoch)
        batches = epoch_batches(len(train_ds), opts.batch_size, np.random.default_rng([opts.seed, epoch]))
        losses: list[float] = []
        tok_losses: list[float] = []
        optim.zero_grad(set_to_none=True)
        for bi, (img, tgt, _) in enumerate(iterate(train_ds, batches, opts.num_workers)):
            img, tgt = img.to(dev), tgt.to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
                res = run_clicks(model, img, tgt, opts.clicks, gen, opts.freeze_encoder)
                total = res.loss
                if head is not None:
                    tok = head.occupancy_loss(head(res.embedding.detach()), tgt)
                    total = total + tok
                    tok_losses.append(float(tok.detach()))
            (total / accum).backward()
            if (bi + 1) % accum == 0 or bi + 1 == len(batches):
                if opts.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, opts.max_grad_norm)
                    if head_params:
                        torch.nn.utils.clip_grad_norm_(head_params, opts.max_grad_norm)
                optim.step()
                optim.zero_grad(set_to_none=True)
            losses.append(float(res.loss.detach()))
            step += 1
            if step % max(1, opts.log_freq) == 0:
                runlog.scalars({"train/loss": losses[-1],
                                **({"train/token_loss": tok_losses[-1]} if tok_losses else {})}, step)
        model.eval()
        dices: list[float] = []
        val_tok: list[float] = []
        with torch.no_grad():
            for j, (img, tgt, _) in enumerate(iterate(val_ds, [[i] for i in range(len(val_ds))],
                                                      opts.num_workers)):
                img, tgt = img.to(dev), tgt.to(dev)
                res = run_clicks(model, img, tgt, opts.clicks, gen, True)
                truth = tgt[0, 0].cpu() > 0.5
                dices.append(dice(res.pred[0].cpu(), truth))
                if head is not None:
                    val_tok.append(float(head.occupancy_loss(head(res.embedding), tgt)))
                if opts.log_images and j == 0:
                    z = truth.shape[2] // 2
                    runlog.image("val/image", img[0, 0, :, :, z].float().cpu().numpy(), step)
                    runlog.image("val/pred", res.pred[0, :, :, z].float().cpu().numpy(), step)
        val_dice = float(np.mean(dices)) if dices else float("nan")
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(val_dice if dices else -float(np.mean(losses)))
        else:
            sched.step()
        secs = time.perf_counter() - t0
        rec: dict[str, Any] = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                               "val_dice": val_dice, "lr": optim.param_groups[0]["lr"],
                               "seconds": secs, "peak_mb": _peak_mb(dev)}
        if head is not None:
            rec["token_loss"] = float(np.mean(tok_losses))
            rec["val_token_loss"] = float(np.mean(val_tok)) if val_tok else float("nan")
        history.append(rec)
        eta = secs * (opts.epochs - epoch - 1)
        say(f"epoch {epoch + 1}/{opts.epochs}: loss {rec['train_loss']:.4f} val Dice {val_dice:.4f}"
            + (f" token loss {rec['token_loss']:.4f}" if head is not None else "")
            + f" ({secs:.1f} s, peak {rec['peak_mb']:.0f} MiB, ~{eta / 60:.1f} min left)")
        runlog.scalars({f"epoch/{k}": float(v) for k, v in rec.items()}, step)
        improved = dices and val_dice > best
        if improved:
            best, stale = val_dice, 0
            save_official(model, out / "best_model.pth", epoch=epoch + 1, val_dice=val_dice,
                          config=json.dumps(cfg.to_dict()))
        else:
            stale += 1
        save_official(model, latest, epoch=epoch + 1, best_dice=best,
                      optimizer_state_dict=optim.state_dict(), scheduler_state_dict=sched.state_dict(),
                      history=json.dumps(history), config=json.dumps(cfg.to_dict()), **_head_extra(head))
        if opts.patience and stale >= opts.patience:
            say(f"early stop: no better val Dice for {stale} epochs")
            break
    if not (out / "best_model.pth").exists():
        save_official(model, out / "best_model.pth", epoch=len(history), val_dice=best)
    _save_encoder(model, head, cfg, out / "sam_encoder.pth")
    summary = {"epochs_run": len(history), "best_val_dice": best, "history": history,
               "train_patches": len(train_ds), "val_patches": len(val_ds),
               "empty_masks_skipped": empty_t + empty_v, "seconds": time.perf_counter() - t_start,
               "device": str(dev), "peak_mb": _peak_mb(dev), "log": runlog.backend,
               "visual_token_head": json.loads(head.config.to_json()) if head is not None else None}
    if opts.run_name:
        from segloop.models.versions import register_run, run_model_name

        name = run_model_name("sammed3d", opts.run_name)
        register_run(out / "best_model.pth", name, base_model=opts.model, engine="sammed3d",
                     config=cfg.to_dict(), val_scores={"val_dice": best}, run_dir=out)
        summary["model"] = name
        say(f"registered as {name}: segloop segment ... --engine {name}")
    stamp = time.strftime("%Y%m%d_%H%M%S")
    (out / f"training_summary_{stamp}.json").write_text(json.dumps(summary, indent=2))
    runlog.close()
    return summary
