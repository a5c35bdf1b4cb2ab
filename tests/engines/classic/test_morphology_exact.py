"""The classic engine's fast morphology equals its definition (scipy's whole-slice operators)
on random shapes that touch the slice's edges, at anisotropic spacings."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from segloop.engines.classic.morphology import (
    component_medians,
    fill_holes,
    open_disk,
    signed_distance,
)


def _shapes(seed: int, n: int = 40) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        nx, ny = rng.integers(20, 70, size=2)
        noise = ndi.gaussian_filter(rng.normal(size=(nx, ny)), rng.uniform(1.0, 4.0))
        m = noise > rng.uniform(-0.05, 0.1)
        if rng.random() < 0.3:  # a blob in the middle, away from the edges
            m[:] = False
            m[nx // 4:3 * nx // 4, ny // 4:3 * ny // 4] = True
            m[nx // 2, ny // 2] = False  # a one-voxel hole
        out.append(m)
    return out


def _open_ref(fg: np.ndarray, sp: tuple[float, float], r: float) -> np.ndarray:
    pad = int(np.ceil(r / min(sp))) + 1
    f = np.pad(fg, pad)
    eroded = ndi.distance_transform_edt(f, sampling=sp) > r
    if not eroded.any():
        return np.zeros_like(fg)
    opened = ndi.distance_transform_edt(~eroded, sampling=sp) <= r
    return opened[pad:-pad, pad:-pad] & fg


@pytest.mark.parametrize("sp", [(1.0, 1.0), (0.7, 0.7), (0.5, 1.3), (3.0, 3.0)])
def test_open_disk_equals_the_whole_slice_opening(sp: tuple[float, float]) -> None:
    changed = 0
    for fg in _shapes(1):
        for r in (2.6 * max(sp), 4.0 * max(sp)):
            got = open_disk(fg, sp, r)
            ref = _open_ref(fg, sp, r)
            assert np.array_equal(got, ref)
            changed += int((got != fg).any())
    assert changed > 10  # the openings do remove something: the comparison is not vacuous


@pytest.mark.parametrize("sp", [(1.0, 1.0), (0.5, 1.3)])
def test_signed_distance_equals_the_whole_slice_transform(sp: tuple[float, float]) -> None:
    for fg in _shapes(2):
        if not fg.any() or fg.all():
            continue
        ref = ndi.distance_transform_edt(fg, sampling=sp) - ndi.distance_transform_edt(~fg, sampling=sp)
        got = signed_distance(fg, sp, 30.0)
        assert np.array_equal(got, np.clip(ref, -30.0, 30.0).astype(np.float32))


def test_fill_holes_equals_scipy() -> None:
    filled = 0
    for fg in _shapes(3):
        ref = ndi.binary_fill_holes(fg)
        assert np.array_equal(fill_holes(fg), ref)
        filled += int((ref != fg).any())
    assert filled > 5
    assert np.array_equal(fill_holes(np.ones((4, 5), bool)), np.ones((4, 5), bool))


def test_component_medians_equal_scipy() -> None:
    rng = np.random.default_rng(4)
    for fg in _shapes(5, 15):
        img = rng.normal(100.0, 30.0, size=fg.shape).astype(np.float32)
        lab, n = ndi.label(fg, structure=np.ones((3, 3), bool))
        if n == 0:
            continue
        ref = np.asarray(ndi.median(img, lab, index=np.arange(1, n + 1)))
        assert np.array_equal(component_medians(img, lab), ref)
