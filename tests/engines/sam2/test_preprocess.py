"""MedSAM2 preprocessing and post-processing (numpy): windows, axes, resize, components."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segloop.engines.sam2.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    fill_holes_in_scores,
    largest_component,
    slice_to_model_input,
    to_uint8_volume,
    window_bounds,
)
from segloop.errors import InputError


def test_window_bounds() -> None:
    assert window_bounds("soft_tissue") == (-160.0, 240.0)
    assert window_bounds("40,400") == (-160.0, 240.0)
    assert window_bounds((-100.0, 300.0)) == (-100.0, 300.0)
    assert window_bounds(None) is None
    with pytest.raises(InputError, match="unknown window"):
        window_bounds("sparkly")
    with pytest.raises(InputError, match="empty"):
        window_bounds((5.0, 5.0))


def test_ct_window_then_minmax_over_the_clipped_volume_and_axes() -> None:
    data = np.zeros((4, 3, 2), np.float32)  # (X, Y, Z)
    data[0, 0, 0] = -1000.0
    data[3, 0, 1] = 1000.0
    data[1, 2, 0] = 40.0
    u8 = to_uint8_volume(data, "CT", "soft_tissue")
    assert u8.shape == (2, 3, 4) and u8.dtype == np.uint8  # (Z, H=Y, W=X)
    # clipped to [-160, 240], min-max over the clipped volume, truncating cast as MedSAM2
    expect = ((np.clip(data, -160, 240) + 160) / 400 * 255).astype(np.uint8)
    # radiological view: anterior (high y) at row 0, the patient's right (high x) at column 0
    assert np.array_equal(u8, expect[::-1, ::-1, :].transpose(2, 1, 0))
    assert u8[0, 2, 3] == 0 and u8[1, 2, 0] == 255 and u8[0, 0, 2] == int(200 / 400 * 255)


def test_auto_window_and_percentiles() -> None:
    rng = np.random.default_rng(0)
    ct = rng.normal(0, 300, (8, 8, 4)).astype(np.float32) - 400
    assert np.array_equal(to_uint8_volume(ct, None, "auto"), to_uint8_volume(ct, "CT", "soft_tissue"))
    mr = rng.gamma(2.0, 100.0, (8, 8, 4))
    mr[0, 0, 0] = 1e6  # an outlier the 99.5th percentile clips
    u8 = to_uint8_volume(mr, "MR", "auto")
    lo, hi = np.percentile(mr, [0.5, 99.5])
    expect = ((np.clip(mr, lo, hi) - lo) / (hi - lo) * 255).astype(np.uint8)
    assert np.array_equal(u8, expect[::-1, ::-1, :].transpose(2, 1, 0))  # radiological view
    assert np.array_equal(to_uint8_volume(np.full((2, 2, 2), 7.0), "MR"), np.zeros((2, 2, 2)))


def test_slice_input_matches_medsam2_rgb_bicubic_resize() -> None:
    img = (np.random.default_rng(1).random((37, 53)) * 255).astype(np.uint8)
    out = slice_to_model_input(img, 64)
    assert out.shape == (3, 64, 64) and out.dtype == np.float32
    rgb = np.asarray(Image.fromarray(img).convert("RGB").resize((64, 64))).transpose(2, 0, 1)
    expect = (rgb / 255.0 - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]
    assert np.abs(out - expect).max() < 1e-5


def test_largest_component_is_26_connected() -> None:
    m = np.zeros((6, 6, 3), bool)
    m[0:2, 0:2, 0] = True
    m[2, 2, 1] = True  # touches the first block by a corner only: still connected (26)
    m[5, 5, 0:3] = True  # 3 voxels apart
    keep = largest_component(m)
    assert keep[0, 0, 0] and keep[2, 2, 1] and not keep[5, 5].any()
    assert not largest_component(np.zeros((2, 2, 2), bool)).any()


def test_fill_holes_in_scores_like_sam2() -> None:
    sc = np.full((12, 12), 5.0, np.float32)
    sc[3, 3] = -1.0  # 1-pixel hole
    sc[5:9, 5:9] = -2.0  # 16-pixel hole
    sc[0, 11] = -1.0  # a small background blob at the border is filled too (as in SAM 2)
    sc[10, 0] = sc[11, 1] = -1.0  # diagonal neighbours: one 8-connected blob of 2
    out = fill_holes_in_scores(sc, 4)
    assert out[3, 3] == np.float32(0.1) and out[0, 11] == np.float32(0.1)
    assert out[10, 0] == np.float32(0.1) and out[11, 1] == np.float32(0.1)
    assert (out[5:9, 5:9] == -2.0).all()
    assert out is not sc and sc[3, 3] == -1.0
    assert fill_holes_in_scores(sc, 0) is sc
    assert (fill_holes_in_scores(sc, 1)[10:, :2] < 0).sum() == 2


def test_prompt_points_box_corners_first_then_points() -> None:
    from segloop.engines.sam2.preprocess import prompt_points

    coords, labels = prompt_points((2, 4, 10, 8), np.array([[5, 6]]), np.array([0]), 2.0, 0.5)
    assert coords.shape == (1, 1, 3, 2) and labels.shape == (1, 1, 3)
    np.testing.assert_allclose(coords[0, 0], [[4, 2], [20, 4], [10, 3]])
    assert labels[0, 0].tolist() == [2, 3, 0]
    coords, labels = prompt_points(None, np.zeros((0, 2)), np.zeros((0,), np.int64), 1.0, 1.0)
    assert coords.shape == (1, 1, 0, 2) and labels.shape == (1, 1, 0)
