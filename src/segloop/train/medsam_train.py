"""Fine-tuning MedSAM (v1) on its npy layout, as bowang-lab/MedSAM's ``train_one_gpu.py``.

Data: ``<npy_dir>/imgs/*.npy`` (float ``(S, S, 3)`` in [0, 1]) and ``<npy_dir>/gts/*.npy``
(uint8 ``(S, S)`` label maps) with the same names (``segloop export npy`` writes them). Each
sample takes one of the slice's labels at random and a box around it, each side pushed out by
a random 0..``bbox_shift`` px (MedSAM's augmentation). Trained parts, as MedSAM: the image
encoder and the mask decoder; the prompt encoder stays frozen (a box is a box, and its
embedding is shared by every task). Loss, as MedSAM: Dice (sigmoid, squared denominators,
MONAI's ``DiceLoss(sigmoid=True, squared_pred=True)``) + BCE on the logits upsampled to
``S``. AdamW (lr 1e-4, weight decay 0.01 by default).

Validation (segloop's addition; MedSAM has none): ``val_fraction`` of the cases (the name
before the last ``-``, as ``segloop export npy`` writes ``<case>-<zzz>.npy``; at least one case,
and none when there is a single case) is held out; after each epoch every label of every held-out
slice is prompted with its exact box and the mean Dice of ``sigmoid > 0.5`` is the epoch's
score. Each epoch writes ``medsam_model_latest.pth`` in MedSAM's own layout (``{"model":
state_dict, "optimizer": ..., "epoch": n}`` as ``train_one_gpu.py`` saves it; segloop's history
rides along under ``"segloop"``) and ``medsam_model_best.pth`` at the best validation Dice (the
lowest training loss without validation); the best model is also exported as a transformers
folder (``hf/``) for registration as ``medsam@RUN``. ``resume`` continues from
``medsam_model_latest.pth`` (weights, optimizer, epoch, history): each epoch's sampling is
seeded by (seed, epoch), so a resumed run trains exactly as an uninterrupted one.
Imports torch; must not import the API or the CLI.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from segloop.errors import InputError

__all__ = ["MedSAMTrainConfig", "MedSAMTrainResult", "dice_bce_loss", "npy_pairs", "split_cases",
           "train_medsam", "validation_dice"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MedSAMTrainConfig:
    """Settings of one run (defaults: MedSAM's)."""

    npy_dir: Path
    out: Path
    epochs: int = 100
    batch_size: int = 2
    lr: float = 1e-4
    weight_decay: float = 0.01
    bbox_shift: int = 20
    steps_per_epoch: int = 0  # 0: every sample once per epoch
    seed: int = 0
    device: str = "cpu"
    threads: int = 2
    val_fraction: float = 0.2
    resume: bool = False
    val_cases: tuple[str, ...] | None = None  # held-out cases given by the caller (not drawn)


@dataclass(frozen=True)
class MedSAMTrainResult:
    """Per-epoch mean losses and validation Dice (empty without validation), the files written."""

    losses: list[float]
    best_checkpoint: Path
    hf_dir: Path
    val_dice: list[float]
    val_cases: list[str]


def npy_pairs(npy_dir: Path) -> list[tuple[Path, Path]]:
    """``(imgs/X.npy, gts/X.npy)`` pairs; InputError naming what is missing."""
    imgs, gts = npy_dir / "imgs", npy_dir / "gts"
    if not imgs.is_dir() or not gts.is_dir():
        raise InputError(f"{npy_dir}: needs imgs/ and gts/ folders of .npy files (MedSAM's layout)")
    names = sorted(p.name for p in gts.glob("*.npy"))
    missing = [n for n in names if not (imgs / n).is_file()]
    if missing:
        raise InputError(f"{npy_dir}: {len(missing)} mask(s) without an image in imgs/, e.g. {missing[0]}")
    if not names:
        raise InputError(f"{npy_dir}/gts holds no .npy file")
    return [(imgs / n, gts / n) for n in names]


def _sample(pair: tuple[Path, Path], shift: int, rng: random.Random
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    img = np.load(pair[0], allow_pickle=False)
    gt = np.load(pair[1], allow_pickle=False)
    if img.ndim != 3 or img.shape[2] != 3 or gt.shape != img.shape[:2]:
        raise InputError(f"{pair[0].name}: image {img.shape} and mask {gt.shape} do not match"
                         " MedSAM's layout ((S, S, 3) and (S, S))")
    labels = [int(v) for v in np.unique(gt) if v != 0]
    if not labels:
        raise InputError(f"{pair[1]}: the mask is empty")
    gt2 = (gt == rng.choice(labels)).astype(np.float32)
    ys, xs = np.nonzero(gt2)
    h, w = gt2.shape
    box = [max(0, int(xs.min()) - rng.randint(0, shift)), max(0, int(ys.min()) - rng.randint(0, shift)),
           min(w, int(xs.max()) + rng.randint(0, shift)), min(h, int(ys.max()) + rng.randint(0, shift))]
    return (torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)),
            torch.from_numpy(gt2)[None], torch.tensor(box, dtype=torch.float32))


def split_cases(pairs: list[tuple[Path, Path]], fraction: float, seed: int,
                given: tuple[str, ...] | None = None
                ) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]], list[str]]:
    """(train pairs, validation pairs, validation cases): whole cases held out (see above);
    ``given``: exactly these cases are held out (a split made by the caller)."""
    if given is not None:
        held = sorted(set(given))
        val = [p for p in pairs if p[1].stem.rsplit("-", 1)[0] in held]
        return [p for p in pairs if p not in val], val, held if val else []
    cases = sorted({p[1].stem.rsplit("-", 1)[0] for p in pairs})
    if fraction <= 0 or len(cases) < 2:
        return pairs, [], []
    n_val = min(len(cases) - 1, max(1, round(fraction * len(cases))))
    held = sorted(random.Random(seed).sample(cases, n_val))
    val = [p for p in pairs if p[1].stem.rsplit("-", 1)[0] in held]
    return [p for p in pairs if p not in val], val, held


def validation_dice(model: Any, pairs: list[tuple[Path, Path]], device: torch.device) -> float:
    """Mean Dice of ``sigmoid > 0.5`` over every label of every slice, each prompted with its
    exact box."""
    size = int(model.config.vision_config.image_size)
    scores: list[float] = []
    model.eval()
    with torch.inference_mode():
        for img_path, gt_path in pairs:
            img = np.load(img_path, allow_pickle=False)
            gt = np.load(gt_path, allow_pickle=False)
            x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))
            feats = model.get_image_embeddings(x[None].to(device))
            for v in (int(v) for v in np.unique(gt) if v != 0):
                truth = gt == v
                ys, xs = np.nonzero(truth)
                box = torch.tensor([[[xs.min(), ys.min(), xs.max(), ys.max()]]], dtype=torch.float32)
                out = model(image_embeddings=feats, input_boxes=box.to(device),
                            multimask_output=False)
                up = F.interpolate(out.pred_masks[:, 0].float(), size=(size, size),
                                   mode="bilinear", align_corners=False)
                pred = (torch.sigmoid(up)[0, 0] > 0.5).cpu().numpy()
                total = int(pred.sum() + truth.sum())
                scores.append(2 * int((pred & truth).sum()) / total if total else 1.0)
    model.train()
    return float(np.mean(scores)) if scores else 0.0


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MedSAM's loss: Dice (sigmoid, squared denominators, per sample and channel) + BCE."""
    p = torch.sigmoid(logits)
    dims = tuple(range(2, logits.ndim))
    inter = (p * target).sum(dims)
    denom = (p * p).sum(dims) + (target * target).sum(dims)
    dice = 1.0 - (2.0 * inter + 1e-5) / (denom + 1e-5)
    return dice.mean() + F.binary_cross_entropy_with_logits(logits, target)


def train_medsam(cfg: MedSAMTrainConfig, model: Any,
                 on_epoch: Callable[[int, float, float | None], None] | None = None
                 ) -> MedSAMTrainResult:
    """Fine-tune ``model`` (a transformers ``SamModel``) on ``cfg.npy_dir``; see the module doc."""
    from safetensors.torch import save_file

    from segloop.models.sam_v1 import sam_hf_to_original, sam_original_to_hf

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    pairs, val_pairs, val_cases = split_cases(npy_pairs(cfg.npy_dir), cfg.val_fraction, cfg.seed,
                                           cfg.val_cases)
    size = int(model.config.vision_config.image_size)
    first = np.load(pairs[0][0], mmap_mode="r")
    if first.shape[:2] != (size, size):
        raise InputError(f"{pairs[0][0].name} is {first.shape[0]}x{first.shape[1]} but the model"
                         f" takes {size}x{size}: export with --size {size}")
    device = torch.device(cfg.device)
    model = model.to(device).train()
    for prm in model.prompt_encoder.parameters():
        prm.requires_grad_(False)
    params = [p for n, p in model.named_parameters()
              if n.startswith(("vision_encoder.", "mask_decoder."))]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    cfg.out.mkdir(parents=True, exist_ok=True)
    best = float("inf")  # lower is better: the loss, or minus the validation Dice
    losses: list[float] = []
    val_dice: list[float] = []
    start = 0
    latest = cfg.out / "medsam_model_latest.pth"
    if cfg.resume:
        if not latest.is_file():
            raise InputError(f"--resume: {latest} does not exist (nothing to continue)")
        ck = torch.load(latest, map_location="cpu", weights_only=True)
        model.load_state_dict(sam_original_to_hf(ck["model"]), strict=True)
        if "optimizer" in ck:
            opt.load_state_dict(ck["optimizer"])
        hist = ck.get("segloop", {})
        losses, val_dice = list(hist.get("losses", [])), list(hist.get("val_dice", []))
        best = float(hist.get("best", best))
        start = int(ck["epoch"]) + 1
        log.info("resuming after epoch %d of %s", start - 1, latest)
    steps = cfg.steps_per_epoch or max(1, len(pairs) // cfg.batch_size)
    for epoch in range(start, cfg.epochs):
        rng = random.Random(cfg.seed * 1_000_003 + epoch)
        order = list(range(len(pairs)))
        rng.shuffle(order)
        total = 0.0
        for step in range(steps):
            idx = [order[(step * cfg.batch_size + i) % len(order)] for i in range(cfg.batch_size)]
            batch = [_sample(pairs[i], cfg.bbox_shift, rng) for i in idx]
            img = torch.stack([b[0] for b in batch]).to(device)
            gt = torch.stack([b[1] for b in batch]).to(device)
            boxes = torch.stack([b[2] for b in batch])[:, None].to(device)
            out = model(pixel_values=img, input_boxes=boxes, multimask_output=False)
            low = out.pred_masks[:, 0]  # (B, 1, S/4, S/4)
            logits = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
            loss = dice_bce_loss(logits, gt)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        mean = total / steps
        losses.append(mean)
        if val_pairs:
            val_dice.append(validation_dice(model, val_pairs, device))
        score = -val_dice[-1] if val_pairs else mean
        improved = score < best
        best = min(best, score)
        sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        history = {"losses": losses, "val_dice": val_dice, "best": best, "val_cases": val_cases}
        torch.save({"model": sam_hf_to_original(sd), "optimizer": opt.state_dict(), "epoch": epoch,
                    "segloop": history}, latest)
        if improved:
            torch.save({"model": sam_hf_to_original(sd), "epoch": epoch, "segloop": history},
                       cfg.out / "medsam_model_best.pth")
            hf = cfg.out / "hf"
            hf.mkdir(exist_ok=True)
            save_file({k: v.float().contiguous() for k, v in sd.items()}, str(hf / "model.safetensors"),
                      metadata={"format": "pt"})
            model.config.save_pretrained(str(hf))
        log.info("epoch %d: loss %.4f%s", epoch, mean,
                 f", val Dice {val_dice[-1]:.4f}" if val_pairs else "")
        if on_epoch is not None:
            on_epoch(epoch, mean, val_dice[-1] if val_pairs else None)
    model.eval()
    return MedSAMTrainResult(losses=losses, best_checkpoint=cfg.out / "medsam_model_best.pth",
                             hf_dir=cfg.out / "hf", val_dice=val_dice, val_cases=val_cases)
