"""The visual-token head: SAM-Med3D image features -> a few tokens for a BLIP-2-style model.

A vision-language model of the BLIP-2 kind reads an image as a short sequence of tokens. The
image encoder gives ``(B, C, g, g, g)`` features (C = 384, g = 8: 512 positions for ViT-B);
:class:`VisualTokenHead` turns them into ``(B, count, dim)`` tokens the way BLIP-2's Q-Former
does, in one layer: ``count`` learned query tokens cross-attend to the normalised, projected
feature positions, then an MLP, with residuals and LayerNorms (``dim`` = the ``--visual_tokens``
option, the tokens' width; ``count`` = ``--visual_token_count``, default 32 like BLIP-2's
queries).

What trains it (the segmentation data has no text): an auxiliary read-out, ``occupancy``, that
predicts from the mean token which of the g³ feature cells hold the target (the fraction of
each 16³ cell covered by the mask, binary cross-entropy). Tokens that know where and how large
the lesion is are what a report-writing language model needs. The trainer feeds the head
*detached* encoder features, so the segmentation model trains exactly as without the head.

Saved in ``sam_encoder.pth`` next to ``image_encoder_state_dict`` as
``visual_token_head_state_dict`` and ``visual_token_head_config`` (JSON of
:class:`VisualTokenConfig`); :func:`load_visual_token_head` reads it back strictly.
Imports torch only; must not import the engine session, the CLI, FastAPI or Celery.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segloop.engines.sammed3d.layers import FeedForward, TokenAttention
from segloop.errors import InputError

__all__ = ["CONFIG_KEY", "STATE_KEY", "VisualTokenConfig", "VisualTokenHead", "load_visual_token_head"]

#: keys of the head in ``sam_encoder.pth`` (and in ``latest_model.pth`` for resuming)
STATE_KEY = "visual_token_head_state_dict"
CONFIG_KEY = "visual_token_head_config"


@dataclass(frozen=True)
class VisualTokenConfig:
    """The head's shape: ``count`` tokens of width ``dim`` from ``in_dim``-channel features on a
    ``grid``³ lattice (``patch`` voxels per cell, for the occupancy target)."""

    dim: int
    count: int = 32
    in_dim: int = 384
    grid: int = 8
    patch: int = 16

    def __post_init__(self) -> None:
        if self.dim < 1 or self.count < 1:
            raise InputError(f"visual tokens need dim >= 1 and count >= 1 (got {self.dim}, {self.count})")

    def heads(self) -> int:
        """Attention heads: 8 when they divide ``dim``, else the largest of 4, 2, 1 that does."""
        return next(h for h in (8, 4, 2, 1) if self.dim % h == 0)

    def to_json(self) -> str:
        """JSON form stored in checkpoints."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> VisualTokenConfig:
        """Inverse of :meth:`to_json`."""
        d = json.loads(text)
        return cls(**{k: int(d[k]) for k in ("dim", "count", "in_dim", "grid", "patch")})


class VisualTokenHead(nn.Module):
    """Learned queries cross-attending to encoder features: ``(B, C, g, g, g)`` -> ``(B, count, dim)``."""

    def __init__(self, cfg: VisualTokenConfig) -> None:
        super().__init__()
        self.config = cfg
        d = cfg.dim
        self.queries = nn.Parameter(0.02 * torch.randn(cfg.count, d))
        self.feature_norm = nn.LayerNorm(cfg.in_dim)
        self.feature_proj = nn.Linear(cfg.in_dim, d)
        self.cross_attn = TokenAttention(d, cfg.heads())
        self.norm1 = nn.LayerNorm(d)
        self.mlp = FeedForward(d, 2 * d, nn.GELU)
        self.norm2 = nn.LayerNorm(d)
        self.occupancy = nn.Linear(d, cfg.grid ** 3)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, count, dim)`` of image features ``(B, in_dim, g, g, g)``."""
        b, c = features.shape[:2]
        if c != self.config.in_dim:
            raise InputError(f"the visual-token head expects {self.config.in_dim}-channel features, got {c}")
        kv = self.feature_proj(self.feature_norm(features.flatten(2).transpose(1, 2)))
        q = self.queries[None].expand(b, -1, -1)
        tok = self.norm1(q + self.cross_attn(q, kv, kv))
        out: torch.Tensor = self.norm2(tok + self.mlp(tok))
        return out

    def occupancy_loss(self, tokens: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """BCE between the read-out of the mean token and the target's cell occupancy.

        tokens: ``(B, count, dim)``; target: ``(B, 1, S, S, S)`` in [0, 1] with S = grid * patch.
        """
        occ = F.avg_pool3d(target.float(), self.config.patch).flatten(1)
        logits = self.occupancy(tokens.float().mean(1))
        return F.binary_cross_entropy_with_logits(logits, occ)


def load_visual_token_head(path: Path, device: str | torch.device = "cpu") -> VisualTokenHead:
    """The head saved in a ``sam_encoder.pth`` (strict: every name and shape must match)."""
    try:
        ck = torch.load(Path(path), map_location=device, weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise InputError(f"{path}: cannot read the checkpoint ({exc})") from exc
    if not isinstance(ck, dict) or STATE_KEY not in ck or CONFIG_KEY not in ck:
        raise InputError(f"{path}: has no visual-token head (train with --visual_tokens N)")
    head = VisualTokenHead(VisualTokenConfig.from_json(str(ck[CONFIG_KEY])))
    state: dict[str, Any] = ck[STATE_KEY]
    head.load_state_dict(state, strict=True)
    return head.to(device).eval()
