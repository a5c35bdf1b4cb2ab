"""The memory attention's rotary position encodings made once per model, not per tracked slice
(imports torch).

SAM 2's memory attention rotates its queries and keys by angles that depend only on the
positions of the 32x32 (at 512 px) feature grid. ``transformers`` recomputes the cos/sin
tables on every slice and, in each of the four cross-attention layers, tiles them once per
memory frame (``cos.repeat``: two ``(7 * 1024, 256)`` float32 copies per layer at a full
memory bank), then rotates the keys into a new tensor and concatenates the object-pointer
keys behind them (a third copy). :func:`memoise_rope` installs:

- the cos/sin tables computed once per device (the same values);
- the tiled tables made once per number of memory frames and kept;
- a rotation that writes the rotated keys and the unrotated pointer keys into one tensor
  (no concatenation) and folds the pairwise sign flip into a kept sine table (no negation
  pass). Each element is computed by the same float32 operations in the same order
  (``x * cos + swap(x) * (+-sin)``, the sign flip being exact), so queries, keys and masks are
  bit-identical to ``transformers``' (tests).

The rotation replaces ``transformers``' module-level ``apply_rotary_pos_emb_2d`` of
``modeling_sam2_video`` (its only caller is the memory attention); inputs it does not cover
(bf16, no rotated keys) go to the original. Must not import FastAPI, Celery or the CLI.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["RopeTables", "memoise_rope", "rotate_pairs"]

#: tiled tables kept per repeat factor (a memory bank holds at most num_maskmem frames)
_MAX_TILES = 16

#: id of a memoised cos table -> its model's tables (every model in the process; an entry
#: goes with its model)
_OWNERS: weakref.WeakValueDictionary[int, RopeTables] = weakref.WeakValueDictionary()


def rotate_pairs(x: torch.Tensor, signed_sin: torch.Tensor, cos: torch.Tensor,
                 out: torch.Tensor) -> torch.Tensor:
    """``out = x * cos + swap(x) * signed_sin`` for float32 ``x (..., N, D)``, D even.

    ``swap`` exchanges the two members of each pair of the last axis; ``signed_sin`` is the
    sine table with its even entries negated, so the product equals ``transformers``'
    ``rotate_pairwise(x) * sin`` bit for bit. ``out`` (same shape as ``x``) may be a view."""
    torch.mul(x, cos, out=out)
    pairs = x.view(*x.shape[:-1], -1, 2)
    swapped = torch.stack((pairs[..., 1], pairs[..., 0]), dim=-1).flatten(start_dim=-2)
    swapped.mul_(signed_sin)
    return out.add_(swapped)


def _signed(sin: torch.Tensor) -> torch.Tensor:
    s = sin.clone()
    s[..., 0::2] = -s[..., 0::2]
    return s


@dataclass
class RopeTables:
    """One model's memoised tables: ``cos``/``sin`` per device (``(1, L, D)``) and their tiles
    ``(1, 1, r * L, D)`` per repeat factor ``r``; ``tiles_made`` counts the tiles built (a
    tracked slice at a steady memory bank builds none); ``enabled`` False runs
    ``transformers``' own code instead."""

    tables: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    signed: dict[int, torch.Tensor] = field(default_factory=dict)
    tiles: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    tiles_made: int = 0
    #: off: ``transformers``' own code runs (for side-by-side measurements)
    enabled: bool = True

    def signed_sin(self, sin: torch.Tensor) -> torch.Tensor:
        """``sin`` with its even entries negated, kept per table."""
        s = self.signed.get(id(sin))
        if s is None:
            s = self.signed[id(sin)] = _signed(sin)
        return s

    def tiled(self, cos: torch.Tensor, sin: torch.Tensor, repeat: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """``cos`` and the signed ``sin`` tiled ``repeat`` times along the positions."""
        key = (id(cos), repeat)
        pair = self.tiles.get(key)
        if pair is None:
            if len(self.tiles) >= _MAX_TILES:
                self.tiles.clear()
            pair = self.tiles[key] = (cos.repeat(1, 1, repeat, 1),
                                      self.signed_sin(sin).repeat(1, 1, repeat, 1))
            self.tiles_made += 1
        return pair


def _rotary_forward(rotary: Any, tables: RopeTables) -> Callable[[Any, Any], Any]:
    original = rotary.forward

    def forward(x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not tables.enabled:
            return original(x, position_ids)  # type: ignore[no-any-return]
        key = str(x.device)
        pair = tables.tables.get(key)
        if pair is None:
            pair = tables.tables[key] = original(x, position_ids)
            _OWNERS[id(pair[0])] = tables
        return pair

    return forward


def _apply(original: Callable[..., Any]) -> Callable[..., Any]:
    def apply_rotary_pos_emb_2d(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
                                sin: torch.Tensor, num_k_exclude_rope: int = 0,
                                repeat_freqs_k: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        n = int(k.shape[-2]) - int(num_k_exclude_rope)
        tables = _OWNERS.get(id(cos))
        if (tables is None or q.dtype != torch.float32 or k.dtype != torch.float32 or n <= 0
                or tables.tables.get(str(cos.device), (None,))[0] is not cos):
            return original(q, k, cos, sin, num_k_exclude_rope=num_k_exclude_rope,  # type: ignore[no-any-return]
                            repeat_freqs_k=repeat_freqs_k)
        q_out = rotate_pairs(q, tables.signed_sin(sin), cos, torch.empty_like(q))
        length = int(q.shape[-2])
        if repeat_freqs_k and n != length:
            cos_k, ssin_k = tables.tiled(cos, sin, n // length)
        else:
            cos_k, ssin_k = cos, tables.signed_sin(sin)
        k_out = torch.empty(k.shape, dtype=k.dtype, device=k.device)
        rotate_pairs(k[..., :n, :], ssin_k, cos_k, k_out[..., :n, :])
        if n < int(k.shape[-2]):
            k_out[..., n:, :].copy_(k[..., n:, :])
        return q_out, k_out

    return apply_rotary_pos_emb_2d


def memoise_rope(model: Any) -> RopeTables | None:
    """Install the memoised tables and the copy-free rotation on a ``Sam2VideoModel``
    (idempotent); returns its tables, or None for a model without a memory attention."""
    attn = getattr(model, "memory_attention", None)
    rotary = getattr(attn, "rotary_emb", None)
    if rotary is None:
        return None
    existing = getattr(rotary, "_segloop_rope", None)
    if isinstance(existing, RopeTables):
        return existing
    from transformers.models.sam2_video import modeling_sam2_video as tm

    tables = RopeTables()
    rotary.forward = _rotary_forward(rotary, tables)
    rotary._segloop_rope = tables
    if getattr(tm.apply_rotary_pos_emb_2d, "_segloop_original", None) is None:
        fn = _apply(tm.apply_rotary_pos_emb_2d)
        fn._segloop_original = tm.apply_rotary_pos_emb_2d  # type: ignore[attr-defined]
        tm.apply_rotary_pos_emb_2d = fn
    return tables
