"""Runtime: position encodings computed once per shape with unchanged values, CPU defaults,
the opt-in channels-last convolution weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from segloop.engines.sam2.runtime import (
    bound_heap_growth,
    default_cache_mb,
    default_encode_batch,
    memoise_position_encodings,
)
from segloop.models.configs import tiny_config
from segloop.models.loader import build_model

DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


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


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return 1.0 if union == 0 else float((a & b).sum()) / union


def test_channels_last_weights_keep_the_masks_on_the_real_ct() -> None:
    """The opt-in ``channels_last`` switch: the same masks as the default layout on the shared
    example CT (liver box on its largest slice, two-way propagation), random weights."""
    from livertask import liver_slice_box
    from segloop.engines.base import drive
    from segloop.engines.sam2 import MedSAM2Engine
    from segloop.engines.sam2.testing import install_tiny_weights
    from segloop.io.readers import load_volume
    from segloop.types import Prompts

    install_tiny_weights("medsam2", image_size=64, seed=2)  # a seed with a non-empty mask
    vol = load_volume(DATA / "totalseg" / "example_ct_sm.nii.gz")
    z, box = liver_slice_box()
    masks = {}
    for cl in (False, True):
        engine = MedSAM2Engine(device="cpu", channels_last=cl)
        s = engine.open(vol)
        convs = [m.weight for m in engine.runtime().model.modules()
                 if isinstance(m, torch.nn.Conv2d)]
        fmt = torch.channels_last if cl else torch.contiguous_format
        assert convs and all(w.is_contiguous(memory_format=fmt) for w in convs)
        assert cl == any(not w.is_contiguous() for w in convs)
        s.segment_slice(z, Prompts.make(box=(box[0], box[1], box[2], box[3])))
        drive(s.propagate(z))
        masks[cl] = s.mask()
    assert masks[False].any() and not masks[False].all(), "a degenerate mask would test nothing"
    ious = [_iou(masks[False][:, :, k], masks[True][:, :, k]) for k in range(vol.shape[2])]
    assert min(ious) >= 0.999, min(ious)
    assert np.array_equal(masks[False], masks[True])
