"""The memory attention's rotary tables made once: bit-identical rotations, features and
masks, and no per-slice tiling of the tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from segloop.engines.sam2.rope import memoise_rope
from segloop.models.configs import build_config, tiny_config
from segloop.models.loader import build_model

DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


def _transformers_rotation() -> Any:
    from transformers.models.sam2_video import modeling_sam2_video as tm

    fn = tm.apply_rotary_pos_emb_2d
    return getattr(fn, "_segloop_original", fn)


def test_rotation_and_memory_attention_are_bit_identical() -> None:
    """hiera-tiny at 512 px: a full memory bank (7 frames of 32x32 + 64 pointer tokens) and a
    partial one, before and after the memo (twice: the second call uses the kept tiles)."""
    from transformers.models.sam2_video import modeling_sam2_video as tm

    torch.manual_seed(0)
    model = build_model(build_config("tiny", 512))
    attn = model.memory_attention
    g = torch.Generator().manual_seed(1)
    x, pos = torch.randn(1024, 1, 256, generator=g), torch.randn(1024, 1, 256, generator=g)
    mem, mpos = torch.randn(7 * 1024 + 64, 1, 64, generator=g), torch.randn(7 * 1024 + 64, 1, 64,
                                                                           generator=g)
    banks = [(7 * 1024 + 64, 64), (3 * 1024 + 16, 16), (1024, 0)]
    with torch.inference_mode():
        ref = [attn(x, mem[:n], pos, mpos[:n], num_object_pointer_tokens=p) for n, p in banks]
        tables = memoise_rope(model)
        assert tables is not None and memoise_rope(model) is tables
        for _ in range(2):
            new = [attn(x, mem[:n], pos, mpos[:n], num_object_pointer_tokens=p) for n, p in banks]
            assert all(torch.equal(a, b) for a, b in zip(ref, new, strict=True))
        assert tables.tiles_made == 2  # 7 and 3 memory frames, made once each
        cos, sin = attn.rotary_emb(x, attn.position_ids)
        q, k = torch.randn(1, 1, 1024, 256, generator=g), torch.randn(1, 1, 2048 + 8, 256,
                                                                      generator=g)
        for n, excl, rep in ((2056, 8, True), (2048, 0, True), (2056, 2056 - 1024, False)):
            a = _transformers_rotation()(q, k[:, :, :n], cos, sin, num_k_exclude_rope=excl,
                                         repeat_freqs_k=rep)
            b = tm.apply_rotary_pos_emb_2d(q, k[:, :, :n], cos, sin, num_k_exclude_rope=excl,
                                           repeat_freqs_k=rep)
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: dict[str, int] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None
                           ) -> Any:
        name = str(func.overloadpacket)
        self.ops[name] = self.ops.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


def _tracked_ops(memo: bool) -> dict[str, int]:
    torch.manual_seed(0)
    model = build_model(tiny_config(64))
    if memo:
        memoise_rope(model)
    attn = model.memory_attention
    n_pos, dim = int(attn.position_ids.shape[0]), int(model.config.memory_attention_hidden_size)
    mem_dim = int(model.mem_dim)
    g = torch.Generator().manual_seed(1)
    x, pos = torch.randn(n_pos, 1, dim, generator=g), torch.randn(n_pos, 1, dim, generator=g)
    n = 7 * n_pos + 16
    mem, mpos = torch.randn(n, 1, mem_dim, generator=g), torch.randn(n, 1, mem_dim, generator=g)
    with torch.inference_mode():
        attn(x, mem, pos, mpos, num_object_pointer_tokens=16)  # the bank's first slice
        with _Count() as count:
            attn(x, mem, pos, mpos, num_object_pointer_tokens=16)
    return count.ops


def test_a_tracked_slice_no_longer_tiles_or_concatenates_the_tables() -> None:
    """The cost: at a steady memory bank, ``transformers`` tiles cos and sin in each layer
    (``aten.repeat``, 2 per layer) and concatenates the rotated and pointer keys (``aten.cat``);
    with the memo a slice does neither (fails on the code before the memo)."""
    old, new = _tracked_ops(False), _tracked_ops(True)
    layers = len(build_model(tiny_config(64)).memory_attention.layers)
    assert old.get("aten.repeat", 0) == 2 * layers  # the measurement sees what it should
    assert new.get("aten.repeat", 0) == 0
    assert new.get("aten.cat", 0) <= old.get("aten.cat", 0) - 2 * layers
    assert new.get("aten.neg", 0) == 0 < old.get("aten.neg", 0)


@pytest.mark.parametrize("seed", [2])
def test_masks_unchanged_on_the_real_ct(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared example CT (liver box on its largest slice, two-way propagation), random
    tiny weights: the same masks with the memo as without it."""
    import segloop.engines.sam2.runtime as runtime
    from livertask import liver_slice_box
    from segloop.engines.base import drive
    from segloop.engines.sam2 import MedSAM2Engine
    from segloop.engines.sam2.testing import install_tiny_weights
    from segloop.io.readers import load_volume
    from segloop.types import Prompts

    install_tiny_weights("medsam2", image_size=64, seed=seed)
    vol = load_volume(DATA / "totalseg" / "example_ct_sm.nii.gz")
    z, box = liver_slice_box()
    masks = {}
    real, on = runtime.memoise_rope, [False]
    monkeypatch.setattr(runtime, "memoise_rope", lambda model: real(model) if on[0] else None)
    for memo in (False, True):
        on[0] = memo
        engine = MedSAM2Engine(device="cpu")
        s = engine.open(vol)
        rotary = engine.runtime().model.memory_attention.rotary_emb
        assert memo == hasattr(rotary, "_segloop_rope")
        s.segment_slice(z, Prompts.make(box=(box[0], box[1], box[2], box[3])))
        drive(s.propagate(z))
        masks[memo] = s.mask()
    assert masks[False].any() and not masks[False].all(), "a degenerate mask would test nothing"
    assert np.array_equal(masks[False], masks[True])
