"""Small torch layers shared by SAM-Med3D's encoder, decoder and the visual-token head.

:class:`ChannelNorm3d` (LayerNorm over the channels of a 3D feature map), :class:`FeedForward`
(``lin1``/``lin2`` as the official MLP blocks), :class:`HeadMLP` (the hyper-network and IoU
heads) and :class:`TokenAttention` (multi-head attention with optional channel downsampling, the
two-way transformer's). Parameter names match what :mod:`segloop.engines.sammed3d.convert` maps.
Imports torch only; must not import the engine session, the CLI, FastAPI or Celery.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ChannelNorm3d", "FeedForward", "HeadMLP", "TokenAttention"]


class ChannelNorm3d(nn.Module):
    """LayerNorm over the channel axis of a ``(B, C, X, Y, Z)`` tensor."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        y = (x - mu) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None, None] * y + self.bias[:, None, None, None]


class FeedForward(nn.Module):
    """Two linear layers with an activation (``fc1``/``fc2`` in the official ``lin1``/``lin2``)."""

    def __init__(self, dim: int, hidden: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.lin2(self.act(self.lin1(x)))
        return out


class HeadMLP(nn.Module):
    """``n`` linear layers with ReLU between them (hyper-network and IoU heads)."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int, n: int) -> None:
        super().__init__()
        dims = [dim_in] + [hidden] * (n - 1)
        outs = [hidden] * (n - 1) + [dim_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, outs, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
        return x


class TokenAttention(nn.Module):
    """Attention with projections to ``dim // downsample`` channels (the two-way transformer's)."""

    def __init__(self, dim: int, heads: int, downsample: int = 1) -> None:
        super().__init__()
        inner = dim // downsample
        self.heads = heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        qh, kh, vh = self._split(self.q_proj(q)), self._split(self.k_proj(k)), self._split(self.v_proj(v))
        out = F.scaled_dot_product_attention(qh, kh, vh)
        b, _, n, _ = out.shape
        res: torch.Tensor = self.out_proj(out.transpose(1, 2).reshape(b, n, -1))
        return res
