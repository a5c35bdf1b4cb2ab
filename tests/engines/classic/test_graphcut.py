"""The classic engine's s-t minimum cut (issue 17, eighth pass): the intensity log-ratio with
contrast-weighted neighbour terms, the allowed region's outside hard background (a 2D
picture's clicks use it, ``picture_click.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segloop.engines.classic.graphcut import min_cut


def _boundary(m: np.ndarray) -> int:
    """Voxel pairs (4-neighbours) of the mask with different labels: its boundary length."""
    return int((m[1:, :] != m[:-1, :]).sum() + (m[:, 1:] != m[:, :-1]).sum())


@pytest.mark.shared_data
def test_min_cut_thresholds_without_neighbour_terms_and_smooths_with_them(shared_data: Path) -> None:
    """A real CT slice (the TotalSegmentator example, the left lower lung lobe's key slice):
    the unary term is the lung-vs-rest log-ratio of a noisy image. Without neighbour terms the
    cut is the thresholded ratio, clipped to the allowed box; with them, a shorter boundary
    (the salt-and-pepper noise joins its side) and nothing outside the box."""
    from segloop.eval.protocol import box_from_mask, key_slice
    from segloop.io import load_label, load_volume

    vol = load_volume(shared_data / "totalseg" / "example_ct_sm.nii.gz")
    truth = np.asarray(load_label(shared_data / "totalseg" / "example_seg.nii.gz", vol, "11"), dtype=bool)
    z = key_slice(truth)
    x0, y0, x1, y1 = box_from_mask(truth[:, :, z])
    img = np.asarray(vol.data[x0 - 8:x1 + 9, y0 - 8:y1 + 9, z], dtype=np.float64)
    noisy = img + np.random.default_rng(0).normal(0.0, 400.0, img.shape)
    lr = np.clip((-500.0 - noisy) / 100.0, -6.0, 6.0)  # lung (air) is foreground-like
    allowed = np.zeros(img.shape, dtype=bool)
    allowed[8:-8, 8:-8] = True
    plain = min_cut(lr, noisy, allowed, 0.0)
    assert np.array_equal(plain, (lr > 0) & allowed)
    cut = min_cut(lr, noisy, allowed, 2.0)
    assert not (cut & ~allowed).any()
    assert _boundary(cut) < 0.7 * _boundary(plain), (_boundary(cut), _boundary(plain))
    t = truth[x0 - 8:x1 + 9, y0 - 8:y1 + 9, z]
    dice = [2 * (m & t).sum() / (m.sum() + t.sum()) for m in (plain, cut)]
    assert dice[1] > dice[0], dice
