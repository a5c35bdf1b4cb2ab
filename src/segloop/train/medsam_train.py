"""Fine-tuning MedSAM (v1) on its npy layout, as bowang-lab/MedSAM's ``train_one_gpu.py``.

Data: ``<npy_dir>/imgs/*.npy`` (float ``(S, S, 3)`` in [0, 1]) and ``<npy_dir>/gts/*.npy``
(uint8 ``(S, S)`` label maps) with the same names (``segloop export npy`` writes them). Each
sample takes one of the slice's labels at random and a box around it, each side pushed out by
a random 0..``bbox_shift`` px (MedSAM's augmentation). Trained parts, as MedSAM: the image
encoder and the mask decoder; the prompt encoder stays frozen (a box is a box, and its
embedding is shared by every task). Loss, as MedSAM: Dice (sigmoid, squared denominators,
MONAI's ``DiceLoss(sigmoid=True, squared_pred=True)``) + BCE on the logits upsampled to
``S``. AdamW (lr 1e-4, weight decay 0.01 by default). Each epoch writes
``medsam_model_latest.pth`` in MedSAM's own layout (``{"model": state_dict, "epoch": n}``) and
``medsam_model_best.pth`` when the epoch's mean loss is the lowest so far; the best model is
also exported as a transformers folder (``hf/``) for registration as ``medsam@RUN``.
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

__all__ = ["MedSAMTrainConfig", "MedSAMTrainResult", "dice_bce_loss", "npy_pairs", "train_medsam"]

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


@dataclass(frozen=True)
class MedSAMTrainResult:
    """Per-epoch mean losses and the files written."""

    losses: list[float]
    best_checkpoint: Path
    hf_dir: Path


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


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MedSAM's loss: Dice (sigmoid, squared denominators, per sample and channel) + BCE."""
    p = torch.sigmoid(logits)
    dims = tuple(range(2, logits.ndim))
    inter = (p * target).sum(dims)
    denom = (p * p).sum(dims) + (target * target).sum(dims)
    dice = 1.0 - (2.0 * inter + 1e-5) / (denom + 1e-5)
    return dice.mean() + F.binary_cross_entropy_with_logits(logits, target)


def train_medsam(cfg: MedSAMTrainConfig, model: Any,
                 on_epoch: Callable[[int, float], None] | None = None) -> MedSAMTrainResult:
    """Fine-tune ``model`` (a transformers ``SamModel``) on ``cfg.npy_dir``; see the module doc."""
    from safetensors.torch import save_file

    from segloop.models.sam_v1 import sam_hf_to_original

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    pairs = npy_pairs(cfg.npy_dir)
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
    best = float("inf")
    losses: list[float] = []
    steps = cfg.steps_per_epoch or max(1, len(pairs) // cfg.batch_size)
    for epoch in range(cfg.epochs):
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
        sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        torch.save({"model": sam_hf_to_original(sd), "epoch": epoch}, cfg.out / "medsam_model_latest.pth")
        if mean < best:
            best = mean
            torch.save({"model": sam_hf_to_original(sd), "epoch": epoch}, cfg.out / "medsam_model_best.pth")
            hf = cfg.out / "hf"
            hf.mkdir(exist_ok=True)
            save_file({k: v.float().contiguous() for k, v in sd.items()}, str(hf / "model.safetensors"),
                      metadata={"format": "pt"})
            model.config.save_pretrained(str(hf))
        log.info("epoch %d: loss %.4f", epoch, mean)
        if on_epoch is not None:
            on_epoch(epoch, mean)
    model.eval()
    return MedSAMTrainResult(losses=losses, best_checkpoint=cfg.out / "medsam_model_best.pth",
                             hf_dir=cfg.out / "hf")
