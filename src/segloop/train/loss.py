"""The training loss of a clip: BCE + Dice on the mask, 0.05 x |predicted IoU - true IoU|, and
SAM 2's object-presence BCE.

SAM 2's decoder replaces a frame's mask by a constant (no gradient) when its object-presence
logit is <= 0, so the mask terms are taken only on frames where the target is present and the
model says it is; the presence term teaches the rest (as in SAM 2's own training). Each term
is averaged over the clip's frames. Imports torch; must not import the API or the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from segloop.train.model import FrameOutput

__all__ = ["ClipLoss", "clip_loss", "dice_loss", "mask_iou"]


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss of ``(1, 1, S, S)`` logits against a 0/1 target of the same shape."""
    p = torch.sigmoid(logits.float()).flatten()
    t = target.float().flatten()
    return 1.0 - (2.0 * (p * t).sum() + eps) / (p.sum() + t.sum() + eps)


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of ``logits > 0`` against a 0/1 target (1.0 when both are empty); no gradient."""
    with torch.no_grad():
        p = logits.detach() > 0
        t = target > 0.5
        union = (p | t).sum()
        if int(union) == 0:
            return torch.ones((), device=logits.device)
        return (p & t).sum().float() / union.float()


@dataclass
class ClipLoss:
    """The loss of one clip and its parts (floats are detached, for logging)."""

    total: torch.Tensor
    bce: float
    dice: float
    iou: float
    object: float
    true_iou: list[float]
    inter: list[float]
    union: list[float]

    @property
    def clip_iou(self) -> float:
        """IoU over the whole clip (intersections and unions summed over frames; 1 if empty)."""
        u = sum(self.union)
        return sum(self.inter) / u if u else 1.0

    @property
    def clip_dice(self) -> float:
        """Dice over the whole clip (``2I / (I + U)``; 1 if both masks are empty)."""
        i, u = sum(self.inter), sum(self.union)
        return 2 * i / (i + u) if u else 1.0


def clip_loss(outputs: Sequence[FrameOutput], truth: torch.Tensor, *, dice_weight: float = 1.0,
              iou_weight: float = 0.05, object_weight: float = 1.0) -> ClipLoss:
    """Loss of a clip's outputs against ``truth`` ``(T, 1, S, S)`` 0/1 (see module docstring)."""
    total = outputs[0].logits.new_zeros((), dtype=torch.float32)
    bce_sum = dice_sum = iou_sum = obj_sum = 0.0
    ious: list[float] = []
    inters: list[float] = []
    unions: list[float] = []
    n = len(outputs)
    for out, tgt in zip(outputs, truth, strict=True):
        tgt = tgt[None].to(out.logits.device)
        present = bool(tgt.any())
        obj_target = torch.ones_like(out.object_logit.float()) if present else torch.zeros_like(
            out.object_logit.float())
        l_obj = F.binary_cross_entropy_with_logits(out.object_logit.float(), obj_target)
        term = object_weight * l_obj
        obj_sum += float(l_obj.detach())
        true_iou = mask_iou(out.logits, tgt)
        ious.append(float(true_iou))
        with torch.no_grad():
            p, t = out.logits.detach() > 0, tgt > 0.5
            inters.append(float((p & t).sum()))
            unions.append(float((p | t).sum()))
        if present and float(out.object_logit.detach()) > 0:
            logits = out.logits.float()
            l_bce = F.binary_cross_entropy_with_logits(logits, tgt.float())
            l_dice = dice_loss(logits, tgt)
            l_iou = (out.iou.float() - true_iou).abs()
            term = term + l_bce + dice_weight * l_dice + iou_weight * l_iou
            bce_sum += float(l_bce.detach())
            dice_sum += float(l_dice.detach())
            iou_sum += float(l_iou.detach())
        total = total + term / n
    return ClipLoss(total=total, bce=bce_sum / n, dice=dice_sum / n, iou=iou_sum / n,
                    object=obj_sum / n, true_iou=ious, inter=inters, union=unions)
