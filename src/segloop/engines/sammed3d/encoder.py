"""SAM-Med3D's 3D ViT image encoder: ``(B, 1, S, S, S)`` patch -> ``(B, D, S/p, S/p, S/p)`` embedding.

Patch embedding, learned absolute positions, pre-norm blocks with window attention (zero-padded
windows, the official quirk of attending over the padding of an 8³ grid padded to 14³) or global
attention, decomposed 3D relative positions broadcast exactly as the official code does (its
misaligned h/w tables, which the released weights were trained with), and the convolutional neck.
Imports torch only; must not import the engine session, the CLI, FastAPI or Celery.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segloop.engines.sammed3d.config import SamMed3DConfig
from segloop.engines.sammed3d.layers import ChannelNorm3d, FeedForward

__all__ = ["EncoderAttention", "EncoderBlock", "ImageEncoder"]


def _rel_table(n_q: int, n_k: int, table: torch.Tensor) -> torch.Tensor:
    """Relative-position embeddings ``(n_q, n_k, C)`` picked from ``table`` (resized if needed)."""
    span = 2 * max(n_q, n_k) - 1
    if table.shape[0] != span:
        table = F.interpolate(table.T[None], size=span, mode="linear")[0].T
    q = torch.arange(n_q, device=table.device)[:, None] * max(n_k / n_q, 1.0)
    k = torch.arange(n_k, device=table.device)[None, :] * max(n_q / n_k, 1.0)
    idx = (q - k) + (n_k - 1) * max(n_q / n_k, 1.0)
    return table[idx.long()]


class EncoderAttention(nn.Module):
    """Multi-head self-attention over a ``(B, X, Y, Z, C)`` token grid with 3D relative positions."""

    def __init__(self, dim: int, heads: int, grid: int) -> None:
        super().__init__()
        self.heads = heads
        head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_d = nn.Parameter(torch.zeros(2 * grid - 1, head_dim))
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d, h, w, c = x.shape
        n = d * h * w
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, N, hd)
        hd = q.shape[-1]
        rq = q.reshape(b * self.heads, d, h, w, hd)
        rel_d = torch.einsum("bdhwc,dkc->bdhwk", rq, _rel_table(d, d, self.rel_pos_d))
        rel_h = torch.einsum("bdhwc,hkc->bdhwk", rq, _rel_table(h, h, self.rel_pos_h))
        rel_w = torch.einsum("bdhwc,wkc->bdhwk", rq, _rel_table(w, w, self.rel_pos_w))
        # Broadcast exactly as the official 3D code does: each table lands on the *last* key
        # axis and the h/w tables are indexed by a key axis, not by the query's own (a quirk
        # of the 2D->3D port that the released weights were trained with).
        bias = (rel_d[:, :, :, :, None, None, :] + rel_h[:, :, :, None, :, None, :]
                + rel_w[:, :, :, None, None, :, :]).reshape(b, self.heads, n, n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        out = out.permute(0, 2, 1, 3).reshape(b, d, h, w, c)
        res: torch.Tensor = self.proj(out)
        return res


class EncoderBlock(nn.Module):
    """Pre-norm ViT block; ``window`` > 0 attends inside zero-padded windows of that size."""

    def __init__(self, cfg: SamMed3DConfig, window: int) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.window = window
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EncoderAttention(dim, cfg.num_heads, window if window else cfg.grid)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FeedForward(dim, int(dim * cfg.mlp_ratio), nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        if self.window:
            b, d, h, w, c = y.shape
            s = self.window
            pd, ph, pw = (-d) % s, (-h) % s, (-w) % s
            y = F.pad(y, (0, 0, 0, pw, 0, ph, 0, pd))
            nd, nh, nw = (d + pd) // s, (h + ph) // s, (w + pw) // s
            y = y.view(b, nd, s, nh, s, nw, s, c).permute(0, 1, 3, 5, 2, 4, 6, 7)
            y = self.attn(y.reshape(-1, s, s, s, c))
            y = y.view(b, nd, nh, nw, s, s, s, c).permute(0, 1, 4, 2, 5, 3, 6, 7)
            y = y.reshape(b, nd * s, nh * s, nw * s, c)[:, :d, :h, :w]
        else:
            y = self.attn(y)
        x = x + y
        res: torch.Tensor = x + self.mlp(self.norm2(x))
        return res


class ImageEncoder(nn.Module):
    """``(B, 1, S, S, S)`` image -> ``(B, prompt_dim, S/p, S/p, S/p)`` embedding."""

    def __init__(self, cfg: SamMed3DConfig) -> None:
        super().__init__()
        g, p = cfg.grid, cfg.patch_size
        self.patch_embed = nn.Conv3d(1, cfg.embed_dim, kernel_size=p, stride=p)
        self.pos_embed = nn.Parameter(torch.zeros(1, g, g, g, cfg.embed_dim))
        self.blocks = nn.ModuleList(
            EncoderBlock(cfg, 0 if i in cfg.global_attn_indexes else cfg.window_size)
            for i in range(cfg.depth)
        )
        self.neck_conv1 = nn.Conv3d(cfg.embed_dim, cfg.prompt_dim, 1, bias=False)
        self.neck_norm1 = ChannelNorm3d(cfg.prompt_dim)
        self.neck_conv2 = nn.Conv3d(cfg.prompt_dim, cfg.prompt_dim, 3, padding=1, bias=False)
        self.neck_norm2 = ChannelNorm3d(cfg.prompt_dim)
        self.checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).permute(0, 2, 3, 4, 1) + self.pos_embed
        for blk in self.blocks:
            if self.checkpointing and self.training:
                from torch.utils.checkpoint import checkpoint

                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        x = x.permute(0, 4, 1, 2, 3)
        x = self.neck_norm1(self.neck_conv1(x))
        res: torch.Tensor = self.neck_norm2(self.neck_conv2(x))
        return res
