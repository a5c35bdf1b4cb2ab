"""The largest 3D component labelled in slabs: scipy's whole-volume answer, in a few MB."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segloop.engines.sam2 import MedSAM2Engine
from segloop.engines.sam2.components import cut_to_largest_component
from segloop.engines.sam2.preprocess import largest_component
from segloop.engines.sam2.testing import install_tiny_weights
from segloop.io.volume import Volume

DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


def _expected(mask: np.ndarray, zs: list[int]) -> tuple[np.ndarray, list[int]]:
    """The whole-volume rule: clear the non-winning voxels of slices ``zs`` only."""
    keep = largest_component(mask)
    out = mask.copy()
    changed = []
    for z in zs:
        cut = mask[:, :, z] & ~keep[:, :, z]
        if cut.any():
            out[:, :, z] &= ~cut
            changed.append(z)
    return out, changed


def _check(mask: np.ndarray, zs: list[int], slab_voxels: int) -> list[int]:
    ref, ref_changed = _expected(mask, zs)
    ours = mask.copy()
    changed = cut_to_largest_component(ours, zs, slab_voxels=slab_voxels)
    assert changed == ref_changed
    assert np.array_equal(ours, ref)
    return changed


@pytest.mark.parametrize("slab_voxels", [1, 60, 500, 1 << 22])
def test_hand_made_cases_across_slab_borders(slab_voxels: int) -> None:
    m = np.zeros((12, 6, 5), bool)  # planes of 30 voxels: slabs of 1, 2, 16 and all planes
    m[0:4, 0, 0] = True  # 4 voxels along the slab axis
    m[4, 1, 1] = True  # touches the line's end only diagonally (26-connected): 5 in all
    m[6:9, 4, 3] = True  # 3
    m[8:12, 5, 4] = True  # touches the previous one diagonally: 7 voxels, the winner
    _check(m, list(range(5)), slab_voxels)
    m[6:9, 4, 3] = False  # now a tie of two 4-voxel lines and the 5: the 5 wins
    _check(m, list(range(5)), slab_voxels)
    t = np.zeros((10, 4, 3), bool)
    t[1:3, 0, 0] = True  # a tie of equal components: the first in C order wins
    t[7:9, 3, 2] = True
    changed = _check(t, [0, 1, 2], slab_voxels)
    assert changed == [2], "the later of two equal components is cleared"
    _check(np.zeros((4, 4, 4), bool), [0, 1], slab_voxels)
    _check(np.ones((4, 4, 4), bool), [0, 3], slab_voxels)
    # repeated and out-of-range slices: each changed slice once, the others ignored
    assert cut_to_largest_component(t.copy(), [2, 2, 9, -1], slab_voxels) == [2]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_masks_equal_the_whole_volume_labelling(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for density in (0.2, 0.35, 0.5):
        m = rng.random((37, 23, 17)) < density
        zs = sorted(rng.choice(17, size=9, replace=False).tolist())
        for slab in (23 * 17, 5 * 23 * 17, 10**9):
            _check(m, zs, slab)


def test_real_label_volume_and_a_view() -> None:
    seg = np.asarray(nib.load(str(DATA / "totalseg" / "example_seg.nii.gz")).dataobj)
    m = seg % 2 == 1  # odd labels: 8 separate 3D components
    assert 1 < int(largest_component(m).sum()) < int(m.sum())
    _check(m, list(range(0, m.shape[2], 2)), 1 << 14)
    big = np.zeros((m.shape[0] + 4, m.shape[1], m.shape[2]), bool)
    big[2:-2] = m
    view = big[2:-2]  # the caller passes the bounding box, a view of the volume's mask
    ref, _ = _expected(m, [3, 4])
    cut_to_largest_component(view, [3, 4], slab_voxels=1 << 14)
    assert np.array_equal(big[2:-2], ref) and not big[:2].any()


def test_the_session_labels_a_full_mask_in_a_few_mb_of_numpy_memory() -> None:
    """The CPU session's end-of-propagation step on a full-height mask (the peak of a long
    propagation): it used to hold a label volume of 2 bytes per voxel (uint16)."""
    install_tiny_weights("medsam2", image_size=64, seed=1)
    nx, ny, nz = 256, 256, 240
    vol = Volume(data=np.zeros((nx, ny, nz), np.int16), affine=np.eye(4),
                 source_format="npz", modality="CT")
    s = MedSAM2Engine(device="cpu").open(vol)
    m = np.zeros((nx, ny, nz), bool)
    m[10:240, 10:240, :] = True  # one big component over the whole height
    m[250:253, 250:253, ::3] = True  # small ones beside it, cut on the tracked slices
    s.set_mask(m)
    from scipy import ndimage, sparse  # imported before tracing: not the step's own memory

    assert ndimage.label and sparse.csgraph.connected_components
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        changed = s._keep_largest_component(1, list(range(nz)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert changed == list(range(0, nz, 3))
    assert np.array_equal(s.mask(), largest_component(m))
    assert peak < 0.5 * m.size, f"{peak / 2**20:.1f} MB traced for a {m.size / 2**20:.1f} MB mask"
