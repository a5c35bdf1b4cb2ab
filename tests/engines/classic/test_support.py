"""Boundary support (``engines/classic/support.py``, option ``support_min``): tracking that
slides past the target's end into tissue of the target's own intensity leaves the key
slice's edge behind; a run of slices whose contour shows little of that edge ends it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segloop.engines.classic import ClassicEngine
from segloop.engines.classic.support import SupportWatch
from segloop.eval.protocol import box_from_mask, key_slice
from segloop.io.volume import Volume
from segloop.types import Prompts

from .example_ct import example_ct


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def _disc(n: int, cx: float, cy: float, r: float) -> np.ndarray:
    x, y = np.mgrid[:n, :n]
    return np.asarray((x - cx) ** 2 + (y - cy) ** 2 <= r * r)


def test_support_is_the_share_of_the_contour_on_the_anchor_edge() -> None:
    """A mask on the disc's edge keeps its support; the same mask over uniform tissue, or
    across the edge of the opposite polarity, has none, and two such slices end the target."""
    rng = np.random.default_rng(0)
    disc = _disc(64, 32, 32, 10)
    img = np.where(disc, 200.0, 100.0) + rng.normal(0, 3, (64, 64))
    flat = np.full((64, 64), 200.0) + rng.normal(0, 3, (64, 64))
    inverse = np.where(disc, 100.0, 200.0) + rng.normal(0, 3, (64, 64))
    watch = SupportWatch(img, disc, least=0.4, run=2)
    assert watch.active
    assert watch.support(img, disc) == pytest.approx(1.0)
    assert (watch.support(flat, disc) or 0.0) < 0.2
    assert (watch.support(inverse, disc) or 0.0) < 0.2
    assert watch.step(img, disc) == 0
    assert watch.step(flat, disc) == 1 and not watch.ended
    assert watch.step(flat, disc) == 2 and watch.ended
    # an anchor without an edge disables the watch
    assert not SupportWatch(flat, np.zeros((64, 64), dtype=bool), 0.4, 2).active


def _slab_volume() -> tuple[Volume, np.ndarray]:
    """A bright tapering rod (z 4-15) in darker tissue, then a slab of the rod's intensity
    over the whole slice (z 16-29) that tracking runs on into at the area cap."""
    rng = np.random.default_rng(1)
    n, nz = 64, 30
    img = np.full((n, n, nz), 100.0)
    truth = np.zeros((n, n, nz), dtype=bool)
    for z in range(4, 16):
        truth[:, :, z] = _disc(n, 32, 32, 11 - 0.3 * abs(z - 8))
    img[truth] = 200.0
    img[:, :, 16:] = 200.0
    img += rng.normal(0, 4, img.shape)
    vol = Volume(data=img.astype(np.float32), affine=np.diag([1.0, 1.0, 2.0, 1.0]),
                 source_format="npz", modality="MR")
    return vol, truth


@pytest.mark.parametrize("least", [None, 0.4])
def test_tracking_into_same_intensity_tissue_ends_where_the_edge_goes(least: float | None) -> None:
    """From one box the old engine runs on through the slab (past z 15); with
    ``support_min`` the target ends where its contour has lost the rod's edge, and every
    yielded slice is the session's final mask, once."""
    vol, truth = _slab_volume()
    z = key_slice(truth)
    session = ClassicEngine(support_min=least).open(vol.canonical())  # type: ignore[arg-type]
    session.segment_slice(z, Prompts(box=box_from_mask(truth[:, :, z])))
    results = list(session.propagate(z))
    mask = session.mask()
    for r in results:
        assert np.array_equal(r.mask, mask[:, :, r.z])
    assert [r.done for r in results] == list(range(1, len(results) + 1))
    zs = [r.z for r in results]
    assert len(zs) == len(set(zs))
    past = int(mask[:, :, 16:].sum())
    if least is None:
        assert past > 0.5 * truth.sum()  # the run-on this rule is for
    else:
        assert past <= 0.05 * truth.sum()
        assert _dice(mask, truth) >= 0.9


@pytest.mark.shared_data
@pytest.mark.parametrize(("label", "floor", "old_below"),
                         [("3", 0.87, 0.83), ("88", 0.65, 0.45), ("79", None, None),
                          ("52", None, None)])
def test_one_box_ends_where_the_edge_goes_and_keeps_tubes(shared_data: Path, label: str,
                                                          floor: float | None,
                                                          old_below: float | None) -> None:
    """The TotalSegmentator example CT from one box, no click: the left kidney (label 3) and
    the left iliopsoas (88) run on past their ends onto tissue of their own density (0.812
    and 0.413 before); with ``support_min`` 0.4 they end where the contour loses its edge.
    The spinal cord (79) and the aorta (52), which continue along z with their edge, do not
    change."""
    can, truth, z, box = example_ct(shared_data, label)

    def run(least: float | None) -> float:
        # jump_frac off: it ends these two run-ons too (test_propagation.py)
        session = ClassicEngine(support_min=least, jump_frac=None).open(can)  # type: ignore[arg-type]
        session.segment_slice(z, box)
        list(session.propagate(z))
        return _dice(session.mask(), truth)

    old, new = run(None), run(0.4)
    if floor is None:
        assert abs(new - old) <= 0.002, f"Dice {old:.3f} -> {new:.3f}"
    else:
        assert old_below is not None and old < old_below
        assert new >= floor, f"Dice {new:.3f} (before {old:.3f})"
