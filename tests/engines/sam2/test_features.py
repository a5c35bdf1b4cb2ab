"""Batched encoding ahead of tracking, the byte-bounded embedding cache, device-style resizing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from engines.sam2.bright_block import bright_block_volume, iou
from segloop.engines.base import drive
from segloop.engines.sam2 import MedSAM2Engine
from segloop.engines.sam2.features import resize_on_device
from segloop.engines.sam2.preprocess import IMAGENET_STD, slice_to_model_input
from segloop.engines.sam2.testing import install_tiny_weights
from segloop.types import Prompts


@pytest.mark.parametrize("seed", [2, 4])
def test_batched_encoding_gives_the_unbatched_masks_both_ways(seed: int) -> None:
    install_tiny_weights("medsam2", image_size=64, seed=seed)
    vol = bright_block_volume()
    masks = {}
    for batch in (1, 5):
        s = MedSAM2Engine(window="soft_tissue", encode_batch=batch,
                          largest_component=False).open(vol)
        s.segment_slice(12, Prompts.make(box=(8, 12, 23, 39)))
        results = list(s.propagate(12))
        assert {r.z for r in results} == set(range(24)) - {12}  # forward and backward
        masks[batch] = s.mask()
        assert s.cache_stats[1] == 24, "each slice is encoded exactly once"
    assert masks[1].any() and not masks[1].all(), "a degenerate mask would test nothing"
    ious = [iou(masks[1][:, :, z], masks[5][:, :, z]) for z in range(24)]
    assert min(ious) >= 0.999, ious


def test_the_cache_is_bounded_by_bytes_and_shares_position_encodings() -> None:
    install_tiny_weights("medsam2", image_size=64)
    s = MedSAM2Engine(cache_mb=0.05, cache_frames=1000, encode_batch=3).open(bright_block_volume())
    s.segment_slice(12, Prompts.make(box=(8, 12, 23, 39)))
    drive(s.propagate(12))
    cache = s._cache
    per_slice = cache.bytes / len(cache._lru)
    assert cache.bytes <= 0.05 * 2**20 + per_slice
    assert 1 < len(cache._lru) < 24, "the byte bound, not the count, limits the cache"
    assert 12 in cache._lru, "the key slice is pinned during the propagation"
    assert not cache._ahead, "features encoded ahead are released once their slice is tracked"
    feats = cache.get_vision_features(next(iter(cache._lru)))
    other = cache.get_vision_features(next(reversed(cache._lru)))
    assert feats["vision_pos_embeds"][0] is other["vision_pos_embeds"][0]
    _assert_views_of_the_memo(s, feats["vision_pos_embeds"])


def _assert_views_of_the_memo(session: object, pos: list[torch.Tensor]) -> None:
    """The cache's position encodings are the runtime's memoised tensors, not copies."""
    memo = session._rt.model.vision_encoder.neck.position_encoding._segloop_memo  # type: ignore[attr-defined]
    held = {t.untyped_storage().data_ptr() for t in memo.values()}
    assert pos and all(p.untyped_storage().data_ptr() in held for p in pos)


def test_the_cpu_path_shares_the_memoised_position_encodings() -> None:
    install_tiny_weights("medsam2", image_size=64)
    s = MedSAM2Engine(device="cpu", encode_batch=1).open(bright_block_volume(nz=6))
    s.segment_slice(3, Prompts.make(box=(8, 12, 23, 39)))
    drive(s.propagate(3))
    cache = s._cache
    feats = cache.get_vision_features(next(iter(cache._lru)))
    _assert_views_of_the_memo(s, feats["vision_pos_embeds"])


@pytest.mark.parametrize(("h", "w", "size"), [(256, 256, 512), (52, 40, 64), (64, 64, 64)])
def test_device_resize_is_within_one_grey_level_of_pil(h: int, w: int, size: int) -> None:
    img = np.random.default_rng(0).integers(0, 256, (h, w), dtype=np.uint8)
    ours = resize_on_device(torch.from_numpy(img)[None], size)[0].numpy()
    ref = slice_to_model_input(img, size)
    grey = 1.0 / 255.0 / float(IMAGENET_STD.min())  # one grey level, normalised
    assert np.abs(ours - ref).max() <= grey + 1e-5
    pil = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BICUBIC))
    assert ours.shape == (3, size, size) and pil.shape == (size, size)
