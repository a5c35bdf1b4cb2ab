"""SAM-Med3D's 3D prompt encoder and mask decoder (point prompts and a low-resolution mask).

:class:`PromptEncoder`: points (random Fourier features, the official dense grid with its first
two axes swapped) and the previous low-res logits -> sparse and dense embeddings.
:class:`MaskDecoder`: the two-way transformer, 3D transposed-convolution upscaling and the
hyper-network heads -> low-res mask logits ``(B, M, 4g, 4g, 4g)`` and IoU estimates.
Imports torch only; must not import the engine session, the CLI, FastAPI or Celery.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from segloop.engines.sammed3d.config import SamMed3DConfig
from segloop.engines.sammed3d.layers import ChannelNorm3d, FeedForward, HeadMLP, TokenAttention

__all__ = ["MaskDecoder", "PromptEncoder", "TwoWayLayer"]


class PromptEncoder(nn.Module):
    """Points and a low-resolution mask -> sparse ``(B, N+1, D)`` and dense ``(B, D, g, g, g)``."""

    pe_gaussian: torch.Tensor

    def __init__(self, cfg: SamMed3DConfig) -> None:
        super().__init__()
        d = cfg.prompt_dim
        self.size = cfg.image_size
        self.grid = cfg.grid
        self.register_buffer("pe_gaussian", torch.randn(3, d // 3))
        self.neg_point = nn.Parameter(torch.zeros(1, d))
        self.pos_point = nn.Parameter(torch.zeros(1, d))
        self.not_a_point = nn.Parameter(torch.zeros(1, d))
        self.no_mask = nn.Parameter(torch.zeros(1, d))
        m = cfg.mask_in_chans
        self.mask_conv1 = nn.Conv3d(1, m // 4, 2, stride=2)
        self.mask_norm1 = ChannelNorm3d(m // 4)
        self.mask_conv2 = nn.Conv3d(m // 4, m, 2, stride=2)
        self.mask_norm2 = ChannelNorm3d(m)
        self.mask_conv3 = nn.Conv3d(m, d, 1)

    def _fourier(self, unit: torch.Tensor) -> torch.Tensor:
        """Random Fourier features of coordinates in [0, 1]: ``(..., 3)`` -> ``(..., D)``."""
        proj = 2 * math.pi * ((2 * unit - 1) @ self.pe_gaussian.to(unit.dtype))
        s = torch.sin(proj)
        return torch.cat([s, torch.cos(proj), s], dim=-1)

    def dense_pe(self) -> torch.Tensor:
        """``(1, D, g, g, g)`` positional encoding of the embedding grid (official axis order)."""
        g = self.grid
        idx = (torch.arange(g, device=self.pe_gaussian.device, dtype=torch.float32) + 0.5) / g
        a, b, c = torch.meshgrid(idx, idx, idx, indexing="ij")
        # the official grid stacks (index along axis 1, along axis 0, along axis 2)
        pe = self._fourier(torch.stack([b, a, c], dim=-1))
        return pe.permute(3, 0, 1, 2)[None]

    def forward(self, points: torch.Tensor, labels: torch.Tensor,
                mask_logits: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        b = points.shape[0]
        pad_pt = torch.zeros(b, 1, 3, device=points.device, dtype=points.dtype)
        pad_lb = torch.full((b, 1), -1, device=labels.device, dtype=labels.dtype)
        pts = torch.cat([points.float() + 0.5, pad_pt.float()], dim=1)
        lab = torch.cat([labels, pad_lb], dim=1)[..., None]
        emb = self._fourier(pts / self.size)
        emb = torch.where(lab == -1, self.not_a_point.expand_as(emb), emb)
        emb = emb + (lab == 0) * self.neg_point + (lab == 1) * self.pos_point
        if mask_logits is None:
            g = self.grid
            dense = self.no_mask.reshape(1, -1, 1, 1, 1).expand(b, -1, g, g, g)
        else:
            y = F.gelu(self.mask_norm1(self.mask_conv1(mask_logits)))
            y = F.gelu(self.mask_norm2(self.mask_conv2(y)))
            dense = self.mask_conv3(y)
        return emb, dense


class TwoWayLayer(nn.Module):
    """Tokens self-attend, attend to the image, MLP; then the image attends to the tokens."""

    def __init__(self, cfg: SamMed3DConfig, first: bool) -> None:
        super().__init__()
        d, h = cfg.prompt_dim, cfg.decoder_heads
        self.first = first
        self.self_attn = TokenAttention(d, h)
        self.norm1 = nn.LayerNorm(d)
        self.cross_attn_token_to_image = TokenAttention(d, h, 2)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = FeedForward(d, cfg.decoder_mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(d)
        self.norm4 = nn.LayerNorm(d)
        self.cross_attn_image_to_token = TokenAttention(d, h, 2)

    def forward(self, tok: torch.Tensor, img: torch.Tensor, tok_pe: torch.Tensor,
                img_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.first:
            tok = self.self_attn(tok, tok, tok)
        else:
            q = tok + tok_pe
            tok = tok + self.self_attn(q, q, tok)
        tok = self.norm1(tok)
        tok = self.norm2(tok + self.cross_attn_token_to_image(tok + tok_pe, img + img_pe, img))
        tok = self.norm3(tok + self.mlp(tok))
        img = self.norm4(img + self.cross_attn_image_to_token(img + img_pe, tok + tok_pe, tok))
        return tok, img


class MaskDecoder(nn.Module):
    """Image embedding + prompt embeddings -> low-resolution mask logits and IoU estimates."""

    def __init__(self, cfg: SamMed3DConfig) -> None:
        super().__init__()
        d = cfg.prompt_dim
        self.n_masks = cfg.num_multimask + 1
        self.layers = nn.ModuleList(TwoWayLayer(cfg, i == 0) for i in range(cfg.decoder_depth))
        self.final_attn = TokenAttention(d, cfg.decoder_heads, 2)
        self.final_norm = nn.LayerNorm(d)
        self.iou_token = nn.Parameter(torch.zeros(1, d))
        self.mask_tokens = nn.Parameter(torch.zeros(self.n_masks, d))
        self.up1 = nn.ConvTranspose3d(d, d // 4, 2, stride=2)
        self.up_norm = ChannelNorm3d(d // 4)
        self.up2 = nn.ConvTranspose3d(d // 4, d // 8, 2, stride=2)
        self.hyper = nn.ModuleList(HeadMLP(d, d, d // 8, 3) for _ in range(self.n_masks))
        self.iou_head = HeadMLP(d, cfg.iou_hidden_dim, self.n_masks, 3)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor,
                dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All ``n_masks`` logits ``(B, M, 4g, 4g, 4g)`` and IoU estimates ``(B, M)``."""
        b = sparse.shape[0]
        out_tok = torch.cat([self.iou_token, self.mask_tokens], 0)[None].expand(b, -1, -1)
        tokens = torch.cat([out_tok, sparse], dim=1)
        src = (image if image.shape[0] == b else image.repeat_interleave(b, 0)) + dense
        _, c, x, y, z = src.shape
        pos = image_pe.expand(b, -1, -1, -1, -1).flatten(2).transpose(1, 2)
        img = src.flatten(2).transpose(1, 2)
        tok = tokens
        for layer in self.layers:
            tok, img = layer(tok, img, tokens, pos)
        tok = self.final_norm(tok + self.final_attn(tok + tokens, img + pos, img))
        up = F.gelu(self.up_norm(self.up1(img.transpose(1, 2).reshape(b, c, x, y, z))))
        up = F.gelu(self.up2(up))
        hyper = torch.stack([mlp(tok[:, 1 + i]) for i, mlp in enumerate(self.hyper)], dim=1)
        bb, cc, xx, yy, zz = up.shape
        masks = (hyper @ up.reshape(bb, cc, -1)).reshape(bb, -1, xx, yy, zz)
        return masks, self.iou_head(tok[:, 0])
