"""SAM's prompt decoding with the per-image work done once (imports torch).

``SamModel(image_embeddings=..., input_boxes=...)`` redoes, for every box on an encoded
image, work that depends on the image only: the image-wide positional encoding (a 64x64
Fourier grid), the dense "no mask" embedding added to every image token, and in the first
two-way attention block the keys and values of the token-to-image attention and the queries
of the image-to-token attention (three 4096x256x128 products, a quarter of the decoder's
arithmetic). :func:`prepare` computes those once per image; :func:`decode` runs the rest of
the same layers with the model's own weights, in the same order of operations, so its logits
equal ``SamModel``'s to float32 noise (tests/engines/medsam/test_fast_decode.py).

Also cut: the transposed convolutions of the upscaling (kernel 2, stride 2: each input pixel
maps to its own 2x2 output block) run as one matrix product each with the channels last, so
the layer norm needs no permutes; and with one mask wanted (``multimask_output=False``) only
that mask's hypernetwork and product are computed, with the 2x2 blocks put back in place on
the final 256x256 logits only. Must not import FastAPI, Celery or the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["DecodeCache", "decode", "prepare"]


@dataclass(frozen=True)
class DecodeCache:
    """One image's prompt-independent decoder inputs (``N`` = 64x64 tokens, ``C`` = 256).

    ``keys``: image embedding + dense no-mask embedding, ``(N, C)``; ``pe``: the image-wide
    positional encoding, ``(N, C)``; ``k0``/``v0``: the first block's token-to-image keys and
    values by head ``(h, N, d)``; ``q0``: its image-to-token queries by head, transposed
    ``(h, d, N)``; ``side``: 64."""

    keys: torch.Tensor
    pe: torch.Tensor
    k0: torch.Tensor
    v0: torch.Tensor
    q0: torch.Tensor
    side: int


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    """``(T, D)`` -> ``(n, T, D / n)``."""
    t, d = x.shape
    return x.view(t, n, d // n).transpose(0, 1)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """``(n, T, d)`` -> ``(T, n * d)``."""
    n, t, d = x.shape
    return x.transpose(0, 1).reshape(t, n * d)


def _attend(mod: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SamAttention on head-split projections: softmax attention, heads merged, out_proj."""
    out = F.scaled_dot_product_attention(q, k, v, scale=mod.scaling)
    result: torch.Tensor = mod.out_proj(_merge(out))
    return result


def prepare(model: Any, features: torch.Tensor) -> DecodeCache:
    """The per-image part for ``features`` ``(1, C, s, s)`` (call under ``inference_mode``)."""
    dec = model.mask_decoder
    layer0 = dec.transformer.layers[0]
    heads = dec.transformer.config.num_attention_heads
    side = int(features.shape[-1])
    pe = model.get_image_wide_positional_embeddings()[0].flatten(1).transpose(0, 1)
    dense = model.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
    keys = (features + dense)[0].flatten(1).transpose(0, 1).contiguous()
    key = keys + pe
    t2i, i2t = layer0.cross_attn_token_to_image, layer0.cross_attn_image_to_token
    return DecodeCache(
        keys=keys, pe=pe.contiguous(), side=side,
        k0=_heads(t2i.k_proj(key), heads).contiguous(),
        v0=_heads(t2i.v_proj(keys), heads).contiguous(),
        q0=_heads(i2t.q_proj(key), heads).transpose(1, 2).contiguous(),
    )


def _token_to_image(mod: Any, tq: torch.Tensor, xk: torch.Tensor, xv: torch.Tensor,
                    heads: int) -> torch.Tensor:
    """SamAttention with ``T`` token queries ``tq`` over the ``N`` image tokens (key input
    ``xk``, value input ``xv``), without projecting the ``N`` image tokens.

    Per head: ``q k^T = q (xk Wk + bk)^T = (q Wk^T) xk^T + q bk`` and, as softmax rows sum to
    one, ``P (xv Wv + bv) = (P xv) Wv + bv``: products of ``(heads T) x C x N`` instead of
    ``N x C x C/2`` (T is 5 to 9 tokens)."""
    n_t, c = tq.shape
    q = _heads(mod.q_proj(tq), heads)  # (h, T, d)
    d = q.shape[-1]
    a = (q @ mod.k_proj.weight.view(heads, d, c)).reshape(heads * n_t, c)
    bias = (q @ mod.k_proj.bias.view(heads, d, 1)).reshape(heads * n_t, 1)
    p = torch.softmax(torch.addmm(bias, a, xk.t()) * mod.scaling, dim=-1)  # (h T, N)
    px = (p @ xv).view(heads, n_t, c)
    out = px @ mod.v_proj.weight.view(heads, d, c).transpose(1, 2) + mod.v_proj.bias.view(heads, 1, d)
    result: torch.Tensor = mod.out_proj(_merge(out))
    return result


def _image_to_token(mod: Any, xq: torch.Tensor | None, q0: torch.Tensor | None,
                    tk: torch.Tensor, tv: torch.Tensor, heads: int) -> torch.Tensor:
    """SamAttention with the ``N`` image tokens as queries (query input ``xq``, or their
    projections by head, transposed, ``q0``) over the ``T`` tokens (key input ``tk``, value
    input ``tv``).

    Per head: ``(xq Wq + bq) k^T = xq (Wq k^T) + bq k^T`` and ``out_proj(P v) = P (v Wo) + bo``:
    products of ``N x C x (heads T)`` instead of ``N x C x C/2``."""
    n_t, c = tk.shape
    k = _heads(mod.k_proj(tk), heads)  # (h, T, d)
    v = _heads(mod.v_proj(tv), heads)
    d = k.shape[-1]
    kt = k.transpose(1, 2)  # (h, d, T)
    if q0 is None:
        assert xq is not None
        a = kt.transpose(1, 2) @ mod.q_proj.weight.view(heads, d, c)  # (h, T, C)
        bias = (k @ mod.q_proj.bias.view(heads, d, 1)).reshape(heads * n_t, 1)
        scores = torch.addmm(bias, a.reshape(heads * n_t, c), xq.t()).view(heads, n_t, -1)
    else:
        scores = k @ q0  # (h, T, N)
    # softmax over the T tokens (dim 1): laid out (h, T, N) it runs along the N image tokens
    p = torch.softmax(scores * mod.scaling, dim=1).reshape(heads * n_t, -1)
    b = (v @ mod.out_proj.weight.t().reshape(heads, d, c)).reshape(heads * n_t, c)
    return torch.addmm(mod.out_proj.bias, p.t(), b)


def _block(layer: Any, i: int, queries: torch.Tensor, keys: torch.Tensor, qpe: torch.Tensor,
           cache: DecodeCache, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One SamTwoWayAttentionBlock; block 0 takes its image-only projections from ``cache``."""
    sa = layer.self_attn
    if layer.skip_first_layer_pe:
        queries = _attend(sa, _heads(sa.q_proj(queries), heads), _heads(sa.k_proj(queries), heads),
                          _heads(sa.v_proj(queries), heads))
    else:
        q = queries + qpe
        queries = queries + _attend(sa, _heads(sa.q_proj(q), heads), _heads(sa.k_proj(q), heads),
                                    _heads(sa.v_proj(queries), heads))
    queries = layer.layer_norm1(queries)
    t2i = layer.cross_attn_token_to_image
    if i == 0:
        attn = _attend(t2i, _heads(t2i.q_proj(queries + qpe), heads), cache.k0, cache.v0)
    else:
        attn = _token_to_image(t2i, queries + qpe, keys + cache.pe, keys, heads)
    queries = layer.layer_norm2(queries + attn)
    queries = layer.layer_norm3(queries + layer.mlp(queries))
    i2t = layer.cross_attn_image_to_token
    query = queries + qpe
    if i == 0:
        attn = _image_to_token(i2t, None, cache.q0, query, queries, heads)
    else:
        attn = _image_to_token(i2t, keys + cache.pe, None, query, queries, heads)
    keys = layer.layer_norm4(keys + attn)
    return queries, keys


def _upscale_logits(dec: Any, keys: torch.Tensor, hyper: torch.Tensor, side: int) -> torch.Tensor:
    """The upscaling path and one mask's logits ``(4 side, 4 side)`` from ``keys`` ``(N, C)``.

    ConvTranspose2d(kernel 2, stride 2): ``out[o, 2y+i, 2x+j] = sum_c in[c, y, x] W[c, o, i, j]
    + b[o]``: a product with the weights ordered ``(c, i, j, o)`` gives each pixel's 2x2 block
    with the channels last."""
    c1, c2, ln = dec.upscale_conv1, dec.upscale_conv2, dec.upscale_layer_norm
    o1, o2 = c1.out_channels, c2.out_channels
    w1 = c1.weight.permute(0, 2, 3, 1).reshape(c1.in_channels, 4 * o1)
    b1 = c1.bias.repeat(4)
    x = torch.addmm(b1, keys, w1).view(-1, o1)  # (N * 4, o1): pixel (y, x, i1, j1)
    x = dec.activation(F.layer_norm(x, (o1,), ln.weight, ln.bias, ln.eps))
    w2 = c2.weight.permute(0, 2, 3, 1).reshape(o1, 4 * o2)
    x = dec.activation(torch.addmm(c2.bias.repeat(4), x, w2))  # (N * 4, 4 * o2)
    m: torch.Tensor = (x.view(-1, o2) @ hyper).view(side, side, 2, 2, 2, 2)  # y x i1 j1 i2 j2
    return m.permute(0, 2, 4, 1, 3, 5).reshape(4 * side, 4 * side)


def decode(model: Any, cache: DecodeCache, sparse: torch.Tensor | None
           ) -> tuple[torch.Tensor, float]:
    """The single-mask logits ``(1, 1, 4 s, 4 s)`` and predicted IoU for prompt embeddings
    ``sparse`` ``(1, 1, P, C)`` (from ``model.prompt_encoder``; None: no prompt), as ``SamModel(...,
    multimask_output=False)`` gives them. Call under ``inference_mode``."""
    dec = model.mask_decoder
    tr = dec.transformer
    heads = tr.config.num_attention_heads
    parts = [dec.iou_token.weight, dec.mask_tokens.weight]
    tokens = torch.cat(parts if sparse is None else [*parts, sparse[0, 0]], dim=0)
    queries, keys = tokens, cache.keys
    for i, layer in enumerate(tr.layers):
        queries, keys = _block(layer, i, queries, keys, tokens, cache, heads)
    fa = tr.final_attn_token_to_image
    attn = _token_to_image(fa, queries + tokens, keys + cache.pe, keys, heads)
    queries = tr.layer_norm_final_attn(queries + attn)
    hyper = dec.output_hypernetworks_mlps[0](queries[1])  # mask token 0 (single-mask output)
    logits = _upscale_logits(dec, keys, hyper, cache.side)
    iou = dec.iou_prediction_head(queries[0])
    return logits[None, None], float(iou[0])
