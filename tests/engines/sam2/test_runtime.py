"""Runtime: position encodings computed once per shape with unchanged values, CPU defaults."""

from __future__ import annotations

import torch

from segloop.engines.sam2.runtime import (
    bound_heap_growth,
    default_cache_mb,
    default_encode_batch,
    memoise_position_encodings,
)
from segloop.models.configs import tiny_config
from segloop.models.loader import build_model


def test_position_encodings_are_memoised_per_shape_with_the_same_features() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(64))
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        ref = model.get_image_features(x, return_dict=True)
    memoise_position_encodings(model)
    memoise_position_encodings(model)  # idempotent
    pe = model.vision_encoder.neck.position_encoding
    with torch.inference_mode():
        ours = model.get_image_features(x, return_dict=True)
        again = model.get_image_features(x[:1], return_dict=True)
        third = model.get_image_features(x[1:], return_dict=True)
    # one image's encodings per shape (4 neck levels, 3 kept), whatever the batch size: a
    # batch shares them (expanded), it holds no per-image copies
    assert len(pe._segloop_memo) == 4
    assert all(int(t.shape[0]) == 1 for t in pe._segloop_memo.values())
    assert ours.fpn_position_encoding[0].data_ptr() == again.fpn_position_encoding[0].data_ptr()
    for a, b in zip(ref.fpn_hidden_states, ours.fpn_hidden_states, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(ref.fpn_position_encoding, ours.fpn_position_encoding, strict=True):
        assert torch.equal(a, b)
    assert again.fpn_position_encoding[0].data_ptr() == third.fpn_position_encoding[0].data_ptr()


def test_cpu_defaults_bound_memory() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert default_cache_mb(cpu) == 64.0 and default_cache_mb(gpu) == 256.0
    assert default_encode_batch(cpu) == 1 and default_encode_batch(gpu) == 16


def test_heap_growth_is_bounded_on_glibc() -> None:
    """This machine runs glibc: the mmap threshold is fixed (the engine does it on a CPU)."""
    assert bound_heap_growth(4 << 20) is True
