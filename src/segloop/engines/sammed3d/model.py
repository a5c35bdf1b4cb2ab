"""SAM-Med3D in plain torch: 3D ViT image encoder, 3D prompt encoder, 3D mask decoder.

Written for segloop from the published architecture of uni-medical/SAM-Med3D (``vit_b_ori``:
a 768-wide, 12-block ViT over 16³ patches of a 128³ volume, window attention of 14³ with
global attention in blocks 2, 5, 8, 11, decomposed relative positions; a 384-wide two-way
transformer decoder with four mask tokens; point prompts only). Parameter names are
segloop's own; :mod:`segloop.engines.sammed3d.convert` maps the official names onto them.

Tensor contract: images ``(B, 1, S, S, S)`` float32, z-normalised, axes = the patch's array
axes (segloop: canonical x, y, z at 1.5 mm); points ``(B, N, 3)`` in voxel indices of that
patch, in the same axis order; labels ``(B, N)`` int64 (1 positive, 0 negative, -1 padding);
low-resolution logits ``(B, 1, S/4, S/4, S/4)``. Numerics follow the official code, including
its quirks (the dense positional grid swaps its first two axes, window attention attends over
the zero padding of an 8³ grid padded to 14³), because the released weights were trained so.

Imports torch only; must not import the engine session, the CLI, FastAPI or Celery.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SamMed3D", "SamMed3DConfig"]


@dataclass(frozen=True)
class SamMed3DConfig:
    """Architecture hyper-parameters; defaults are the released ViT-B (``vit_b_ori``)."""

    image_size: int = 128
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    prompt_dim: int = 384
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    iou_hidden_dim: int = 256
    num_multimask: int = 3
    spacing_mm: float = 1.5

    @property
    def grid(self) -> int:
        """Tokens per axis of the image embedding (8 for ViT-B)."""
        return self.image_size // self.patch_size

    @property
    def low_res(self) -> int:
        """Side of the low-resolution logits (4 x grid; 32 for ViT-B)."""
        return 4 * self.grid

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (saved in the model cache's meta.json)."""
        d = asdict(self)
        d["global_attn_indexes"] = list(self.global_attn_indexes)
        d["arch"] = "sammed3d"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamMed3DConfig:
        """From :meth:`to_dict` output (unknown keys are ignored, ``arch`` checked)."""
        if d.get("arch", "sammed3d") != "sammed3d":
            raise ValueError(f"not a SAM-Med3D config (arch={d.get('arch')!r})")
        names = set(cls.__dataclass_fields__)
        kw = {k: v for k, v in d.items() if k in names}
        if "global_attn_indexes" in kw:
            kw["global_attn_indexes"] = tuple(int(i) for i in kw["global_attn_indexes"])
        return cls(**kw)

    @classmethod
    def tiny(cls) -> SamMed3DConfig:
        """A few-thousand-parameter model with the same structure (tests, CPU training checks)."""
        return cls(image_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                   global_attn_indexes=(1,), window_size=3, prompt_dim=48, mask_in_chans=8,
                   decoder_heads=2, decoder_mlp_dim=64, iou_hidden_dim=32)


# ---------------------------------------------------------------------- shared pieces


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


# ---------------------------------------------------------------------- image encoder


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


# ---------------------------------------------------------------------- prompt encoder


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


# ---------------------------------------------------------------------- mask decoder


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


# ---------------------------------------------------------------------- the model


class SamMed3D(nn.Module):
    """The whole model; ``encode`` once per patch, ``decode`` once per click."""

    def __init__(self, cfg: SamMed3DConfig | None = None) -> None:
        super().__init__()
        self.config = cfg or SamMed3DConfig()
        self.image_encoder = ImageEncoder(self.config)
        self.prompt_encoder = PromptEncoder(self.config)
        self.mask_decoder = MaskDecoder(self.config)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, 1, S, S, S)`` z-normalised patch -> ``(B, D, g, g, g)`` embedding."""
        res: torch.Tensor = self.image_encoder(image)
        return res

    def decode(self, embedding: torch.Tensor, points: torch.Tensor, labels: torch.Tensor,
               mask_logits: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Single-mask output (the first mask token, as the official inference): low-res logits
        ``(B, 1, 4g, 4g, 4g)`` and IoU estimate ``(B, 1)``. ``mask_logits``: the previous
        low-res logits (None: no mask prompt; the official inference passes zeros at click 1)."""
        sparse, dense = self.prompt_encoder(points, labels, mask_logits)
        masks, iou = self.mask_decoder(embedding, self.prompt_encoder.dense_pe(), sparse, dense)
        return masks[:, :1], iou[:, :1]

    def upscale(self, low_res: torch.Tensor) -> torch.Tensor:
        """Low-res logits -> ``(B, 1, S, S, S)`` logits (trilinear, as the official inference)."""
        s = self.config.image_size
        return F.interpolate(low_res, size=(s, s, s), mode="trilinear", align_corners=False)
