"""Torch post-processing (hole filling, largest 3D component, chunked masks) equals scipy's."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from segloop.engines.base import drive
from segloop.engines.sam2 import MedSAM2Engine
from segloop.engines.sam2.postprocess import (
    fill_holes_torch,
    largest_component_torch,
    masks_to_host,
)
from segloop.engines.sam2.preprocess import fill_holes_in_scores, largest_component
from segloop.engines.sam2.testing import install_tiny_weights
from segloop.io.radiological import view_to_slice
from segloop.io.volume import Volume
from segloop.types import Prompts


def _same_fill(scores: np.ndarray, area: int) -> None:
    ref = fill_holes_in_scores(scores.astype(np.float32), area)
    ours = fill_holes_torch(torch.from_numpy(scores.astype(np.float32)), area).numpy()
    assert np.array_equal(ref, ours)


def _same_lcc(mask: np.ndarray) -> np.ndarray:
    ref = largest_component(mask)
    ours = largest_component_torch(torch.from_numpy(mask)).numpy()
    assert ours.dtype == bool and np.array_equal(ref, ours)
    return ref


def test_fill_holes_hand_made_cases() -> None:
    s = np.ones((12, 14), np.float32)
    s[3:5, 3:5] = -1.0  # an inner hole of 4 px
    s[0, 6:9] = -2.0  # 3 px at the border
    s[9, 9] = -1.0
    s[10, 10] = -1.0  # diagonal neighbours: one 8-connected blob of 2
    s[6, 0:6] = 0.0  # score 0 is background: 6 px touching the border
    for area in (1, 2, 3, 4, 5, 6, 8):
        _same_fill(s, area)
    filled = fill_holes_torch(torch.from_numpy(s), 4).numpy()
    assert filled[3, 3] == np.float32(0.1) and filled[0, 6] == np.float32(0.1)
    assert filled[6, 0] == 0.0, "6 px is above the 4 px limit"
    assert filled[9, 9] == np.float32(0.1), "the diagonal pair counts as one blob of 2"
    _same_fill(-np.ones((5, 7), np.float32), 40)  # all background, one blob
    _same_fill(np.ones((5, 7), np.float32), 3)  # no background at all
    t = torch.from_numpy(s)
    assert fill_holes_torch(t, 0) is t, "0 switches the filling off"


def test_fill_holes_batch_equals_each_slice_and_random_maps() -> None:
    rng = np.random.default_rng(0)
    maps = (rng.normal(size=(6, 32, 32)) + np.linspace(-1, 1, 6)[:, None, None]).astype(np.float32)
    maps = ndimage.uniform_filter(maps, size=(1, 3, 3))
    ours = fill_holes_torch(torch.from_numpy(maps), 8).numpy()
    for b in range(6):
        assert np.array_equal(ours[b], fill_holes_in_scores(maps[b], 8))
    assert not np.array_equal(ours, maps), "the case must fill something"


def test_largest_component_hand_made_cases() -> None:
    m = np.zeros((8, 9, 10), bool)
    m[1:3, 1:3, 1:3] = True  # 8 voxels
    m[3, 3, 3] = True  # touches the block only at a corner: 26-connected, joins it
    m[5:8, 5:8, 5:8] = True  # 27 voxels, the largest
    out = _same_lcc(m)
    assert out[6, 6, 6] and not out[1, 1, 1]
    m[5:8, 5:8, 5:8] = False
    out = _same_lcc(m)
    assert out[3, 3, 3] and out[1, 1, 1], "the corner voxel belongs to the block (26-connected)"
    tie = np.zeros((6, 6, 6), bool)
    tie[4:6, 0:2, 0:2] = True
    tie[0:2, 4:6, 4:6] = True  # two equal blocks: scipy keeps the first in C order
    assert _same_lcc(tie)[0, 4, 4]
    edge = np.zeros((5, 5, 5), bool)
    edge[0, :, 0] = True
    edge[4, 4, 4] = True  # components on the array's faces
    _same_lcc(edge)
    _same_lcc(np.zeros((3, 4, 5), bool))
    _same_lcc(np.ones((3, 4, 5), bool))


def test_largest_component_random_masks() -> None:
    rng = np.random.default_rng(1)
    for _ in range(40):
        shape = tuple(int(v) for v in rng.integers(1, 18, 3))
        _same_lcc(rng.random(shape) < rng.uniform(0.05, 0.45))


def _label_volume(shared: Path, name: str) -> np.ndarray:
    return np.asarray(nib.load(str(shared / "totalseg" / name)).dataobj).astype(np.int16)


def test_on_real_label_volumes(shared_data: Path) -> None:
    labels = _label_volume(shared_data, "example_seg.nii.gz")
    tested = 0
    for value in (1, 2, 3, 5, 6, 52):  # spleen, kidneys, liver, stomach, aorta (cases.csv)
        organ = labels == value
        if not organ.any():
            continue
        # an organ plus a thresholded neighbour makes several components of real shapes
        noisy = organ | (ndimage.binary_erosion(labels > 0, iterations=2) & ~organ)
        for m in (organ, noisy, organ & (np.indices(organ.shape)[2] % 7 != 3)):
            _same_lcc(m)
        for z in np.flatnonzero(organ.any(axis=(0, 1)))[::5]:
            sl = organ[:, :, z]
            scores = np.where(sl, 3.0, -3.0).astype(np.float32)
            scores[::9, ::11] = -1.0  # punch holes of one pixel into it
            _same_fill(scores, 8)
            _same_fill(-scores, 8)
            tested += 1
    assert tested > 10


def test_chunked_masks_equal_the_slice_by_slice_path() -> None:
    rng = np.random.default_rng(3)
    low = torch.from_numpy(ndimage.uniform_filter(rng.normal(size=(5, 16, 16)), size=(1, 3, 3))
                           .astype(np.float32))
    x, y = 40, 52
    chunk = masks_to_host(low, (x, y), 3).numpy()
    for b in range(5):
        filled = torch.from_numpy(fill_holes_in_scores(low[b].numpy(), 3))[None, None]
        up = F.interpolate(filled, size=(y, x), mode="bilinear", align_corners=False)
        assert np.array_equal(chunk[b], view_to_slice((up[0, 0] > 0).numpy()))


def _volume(seed: int) -> Volume:
    rng = np.random.default_rng(seed)
    data = rng.normal(0.0, 40.0, (40, 52, 20)).astype(np.float32) - 100.0
    data[8:24, 12:40, 2:18] += 250.0
    return Volume(data=data, affine=np.eye(4), source_format="npz", modality="CT")


@pytest.mark.parametrize("seed", [2, 4])
def test_device_post_processing_gives_the_host_masks(seed: int) -> None:
    """The torch path (chunked copies, torch hole filling and 3D component) against the scipy
    path on the same random weights: every slice identical, forward and backward."""
    install_tiny_weights("medsam2", image_size=64, seed=seed)
    vol = _volume(seed)
    masks = {}
    for post in (False, True):
        s = MedSAM2Engine(window="soft_tissue", fill_holes=8, device_post=post).open(vol)
        assert s._rt.device_post is post
        s.segment_slice(10, Prompts.make(box=(8, 12, 23, 39)))
        results = list(s.propagate(10))
        assert {r.z for r in results} >= set(range(20)) - {10}
        drive(s.refine(4, Prompts.make(points=[(15, 20)], labels=[1])))
        masks[post] = s.mask()
    assert masks[False].any() and not masks[False].all(), "a degenerate mask would test nothing"
    for z in range(20):
        assert np.array_equal(masks[False][:, :, z], masks[True][:, :, z]), z


def test_largest_component_labels_fall_back_to_int32_past_65535_components() -> None:
    from segloop.engines.sam2.preprocess import largest_component_labels

    m = np.zeros((84, 84, 84), bool)
    m[::2, ::2, ::2] = True  # 74,088 single voxels, none 26-connected to another
    m[10:13, 10:13, 10:13] = True  # one block wins
    labels, winner = largest_component_labels(m)
    assert labels.dtype != np.uint16 and int(labels.max()) > 65535
    assert np.array_equal(labels == winner, _same_lcc(m))
    small, _ = largest_component_labels(m[:20, :20, :20])
    assert small.dtype == np.uint16, "few components: half the memory of int32"
