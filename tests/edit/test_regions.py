"""Slice ranges and connected regions: each operation touches one object only."""

from __future__ import annotations

import numpy as np
import pytest

from segloop.edit.regions import clear_slices, keep_slices, remove_islands, remove_region
from segloop.errors import InputError


def _scene() -> np.ndarray:
    """Object 1: a 6x6 column on slices 2..9 plus a leak blob on slices 7..9 that touches it
    (x = 7 | 8) on those slices; object 2 beside it on every slice."""
    lab = np.zeros((20, 20, 12), np.uint8)
    lab[2:8, 2:8, 2:10] = 1
    lab[8:14, 2:5, 7:10] = 1  # the leak: touches the column on x=7|8
    lab[15:18, 15:18, :] = 2
    return lab


def test_clear_slices_from_here_up_leaves_the_rest() -> None:
    lab = _scene()
    out = clear_slices(lab, 1, 7, 11)
    assert not (out[:, :, 7:] == 1).any()
    assert np.array_equal(out[:, :, :7], lab[:, :, :7])
    assert (out == 2).sum() == (lab == 2).sum()
    assert (lab[:, :, 7:] == 1).any()  # the input is not changed


def test_keep_slices_is_the_propagation_range() -> None:
    lab = _scene()
    out = keep_slices(lab, 1, 3, None)
    assert not (out[:, :, :3] == 1).any() and (out[:, :, 3:] == lab[:, :, 3:]).all()
    out = keep_slices(lab, 1, None, 4)
    assert (np.flatnonzero((out == 1).any(axis=(0, 1))) == [2, 3, 4]).all()
    assert (out == 2).sum() == (lab == 2).sum()


def test_bad_ranges_are_one_line_errors() -> None:
    lab = _scene()
    with pytest.raises(InputError, match="after last slice"):
        clear_slices(lab, 1, 8, 3)
    with pytest.raises(InputError, match=r"outside the volume's slices 0\.\.11"):
        keep_slices(lab, 1, 0, 12)
    with pytest.raises(InputError, match=r"outside 1\.\.255"):
        clear_slices(lab, 0, 0, 1)


def test_remove_region_2d_takes_the_blob_on_its_slice_only() -> None:
    lab = _scene()
    out, n = remove_region(lab, 1, (12, 3, 8), three_d=False)
    # on slice 8 the blob touches the column: the whole object on slice 8 goes, nothing else
    assert n == int((lab[:, :, 8] == 1).sum())
    assert not (out[:, :, 8] == 1).any()
    assert np.array_equal(out[:, :, 9], lab[:, :, 9])


def test_remove_region_3d_takes_a_separate_blob_and_keeps_the_column() -> None:
    lab = _scene()
    lab[8, :, :] = np.where(lab[8, :, :] == 1, 0, lab[8, :, :])  # cut the leak off
    out, n = remove_region(lab, 1, (12, 3, 8), three_d=True)
    assert n == 5 * 3 * 3
    assert (out[2:8, 2:8, 2:10] == 1).all()
    assert not (out[9:14, 2:5, 7:10] == 1).any()


def test_remove_region_needs_a_click_on_the_object() -> None:
    lab = _scene()
    with pytest.raises(InputError, match="not on this object"):
        remove_region(lab, 1, (16, 16, 3), three_d=True)  # object 2 there
    with pytest.raises(InputError, match="outside the volume"):
        remove_region(lab, 1, (20, 0, 0), three_d=False)


def test_remove_islands_keeps_big_parts_and_other_objects() -> None:
    lab = _scene()
    lab[0, 19, 0] = 1
    lab[19, 0, 5:7] = 1
    lab[10, 18, 11] = 2
    out, n = remove_islands(lab, 1, 10)
    assert n == 3
    assert out[0, 19, 0] == 0 and not out[19, 0, 5:7].any()
    assert out[10, 18, 11] == 2
    assert (out == 1).sum() == (lab == 1).sum() - 3
    out2, n2 = remove_islands(lab, 1, 10, three_d=False)
    assert n2 >= 3 and out2[0, 19, 0] == 0
