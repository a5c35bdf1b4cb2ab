"""Smoothing and fill-between-slices (shape-based interpolation)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from segloop.edit.shape import fill_between, smooth
from segloop.errors import InputError


def _disc(n: int, c: tuple[float, float], r: float) -> np.ndarray:
    x, y = np.mgrid[:n, :n]
    return (x - c[0]) ** 2 + (y - c[1]) ** 2 <= r * r


def test_fill_between_interpolates_radius_and_centre() -> None:
    lab = np.zeros((40, 40, 11), np.uint8)
    lab[:, :, 0][_disc(40, (18, 20), 4)] = 3
    lab[:, :, 10][_disc(40, (22, 20), 10)] = 3
    lab[30:, 30:, :] = 1  # another object: never written over
    out, added = fill_between(lab, 3)
    assert added > 0
    areas, centres = [], []
    for z in range(0, 11):
        m = out[:, :, z] == 3
        areas.append(int(m.sum()))
        centres.append(float(np.nonzero(m)[0].mean()))
    # signed-distance blending: every slice filled, growing and moving from one end to the other
    assert all(a < b for a, b in itertools.pairwise(areas)), areas
    assert all(a < b for a, b in itertools.pairwise(centres)), centres
    mid = out[:, :, 5] == 3
    assert abs(mid.sum() - np.pi * 7 * 7) < 0.3 * np.pi * 7 * 7
    assert (out[30:, 30:, :] == 1).all()


def test_fill_between_carries_a_shape_that_moved_across_the_gap() -> None:
    """Two strokes that do not overlap (the structure moved between the drawn slices): the
    slices between hold the same shape on the line between them, not nothing."""
    lab = np.zeros((60, 60, 5), np.uint8)
    lab[10:40, 10:18, 0] = 2  # a 30x8 bar
    lab[20:50, 30:38, 4] = 2  # the same bar moved by (10, 20) voxels, no overlap
    out, added = fill_between(lab, 2)
    for z in (1, 2, 3):
        m = out[:, :, z] == 2
        assert abs(int(m.sum()) - 240) <= 40, (z, int(m.sum()))
        cx, cy = np.argwhere(m).mean(axis=0)
        assert abs(cx - (24.5 + 2.5 * z)) < 1 and abs(cy - (13.5 + 5 * z)) < 1, (z, cx, cy)
    assert added == sum(int((out[:, :, z] == 2).sum()) for z in (1, 2, 3))


def test_fill_between_needs_two_slices() -> None:
    lab = np.zeros((10, 10, 5), np.uint8)
    lab[2:5, 2:5, 2] = 1
    with pytest.raises(InputError, match="at least two axial slices"):
        fill_between(lab, 1)


def test_fill_between_respects_the_range() -> None:
    lab = np.zeros((20, 20, 9), np.uint8)
    for z in (0, 4, 8):
        lab[5:10, 5:10, z] = 1
    out, _ = fill_between(lab, 1, first=4)
    assert not out[:, :, 1:4].any() and out[:, :, 5:8].any()


def test_smooth_removes_a_spike_and_keeps_the_volume() -> None:
    lab = np.zeros((40, 40, 20), np.uint8)
    lab[10:30, 10:30, 5:15] = 2
    lab[30:35, 20, 10] = 2  # a one-voxel-thin spike
    lab[5, 5, 5] = 1
    out, changed = smooth(lab, 2, (1.0, 1.0, 1.0), 3.0)
    assert changed > 0
    assert not (out[31:35, 20, 10] == 2).any()
    before = (lab == 2).sum()
    assert abs(int((out == 2).sum()) - int(before)) < 0.1 * before
    assert out[5, 5, 5] == 1
    with pytest.raises(InputError, match=r"0\.\.100 mm"):
        smooth(lab, 2, (1.0, 1.0, 1.0), 0.0)


def test_smooth_of_an_absent_object_changes_nothing() -> None:
    lab = np.zeros((5, 5, 5), np.uint8)
    out, changed = smooth(lab, 4, (1.0, 1.0, 1.0), 2.0)
    assert changed == 0 and not out.any()
