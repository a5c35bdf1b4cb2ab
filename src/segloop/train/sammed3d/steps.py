"""One SAM-Med3D training step: the official trainer's simulated clicks and the BCE + Dice loss.

A first positive click inside the target, then ``clicks - 1`` more, each a uniformly random
voxel of the current error region (positive in a missed voxel, negative in a false positive;
a target voxel when there is no error), as the official ``random_sample_next_click``; every
prediction is fed back as the low-res mask prompt and the loss (BCE + Dice on the 128³
logits) is summed over the clicks. Random draws come from the ``torch.Generator`` passed in.
Imports torch; must not import the CLI or the API.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from segloop.engines.sammed3d.model import SamMed3D

__all__ = ["ClickResult", "dice", "next_click", "run_clicks", "seg_loss"]


@dataclass
class ClickResult:
    """The click loop's summed loss, final ``(B, S, S, S)`` bool prediction and the image
    embedding it decoded from (the visual-token head reads it, detached)."""

    loss: torch.Tensor
    pred: torch.Tensor
    embedding: torch.Tensor


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


def seg_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice of ``(B, 1, S, S, S)`` logits against a float target."""
    prob = torch.sigmoid(logits)
    inter = (prob * target).flatten(1).sum(1)
    d = 1 - (2 * inter + 1) / (prob.flatten(1).sum(1) + target.flatten(1).sum(1) + 1)
    return F.binary_cross_entropy_with_logits(logits, target) + d.mean()


def dice(a: torch.Tensor, b: torch.Tensor) -> float:
    """Dice of two bool tensors (1 when both are empty)."""
    s = float(a.sum() + b.sum())
    return 1.0 if s == 0 else float(2 * (a & b).sum()) / s


def run_clicks(model: SamMed3D, image: torch.Tensor, target: torch.Tensor, clicks: int,
               gen: torch.Generator, freeze_encoder: bool) -> ClickResult:
    """The simulated click loop on a batch ``(B, 1, S, S, S)``."""
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
        total = total + seg_loss(logits, target)
        pred = (logits[:, 0] > 0).detach()
    return ClickResult(total, pred, emb)
