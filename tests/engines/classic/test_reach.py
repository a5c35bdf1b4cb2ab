"""How far a click's change reaches when nothing in the image bounds it (issue 17, options
``window_fill``, ``rim_cut`` and ``hold_rim``, see ``engines/classic/reach.py``): corrective
clicks whose own change, or whose carried change, lowered the 3D Dice."""

from __future__ import annotations

import numpy as np

from segloop.engines.classic.context import ClassicContext
from segloop.engines.classic.options import ClassicOptions
from segloop.engines.classic.propagation import propagate_delta
from segloop.engines.classic.reach import rim_cut, rim_only, window_filled
from segloop.engines.classic.segment2d import box_segment, grow, prompted_slice
from segloop.engines.state import SessionState
from segloop.types import Prompts


def _square_ctx(img: np.ndarray, opts: ClassicOptions, box: tuple[int, int, int, int]) -> ClassicContext:
    ctx = ClassicContext(img.astype(np.float32), (1.0, 1.0, 2.0), opts)
    box_segment(ctx, 1, 0, box)
    return ctx


def test_a_positive_region_that_fills_its_window_is_cut_to_the_half_window() -> None:
    """Key slice: a bright square (120) on dark (60). Slice 1: target-like tissue everywhere
    (the vena cava inside the liver): the grown region fills its window (radius 1.5 times
    the object's radius, 885 voxels) and no local edge exists, so it is cut to the half
    window around the click. Slice 2: a small bright disk on dark, bounded by its edge,
    keeps its region whatever the option."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:80, :80]
    img = np.full((80, 80, 3), 60.0)
    img[30:50, 30:50, 0] = 120.0
    img[:, :, 1] = 120.0
    img[:, :, 2][(xx - 40) ** 2 + (yy - 40) ** 2 <= 16] = 120.0
    img += rng.normal(0.0, 4.0, img.shape)
    empty = np.zeros((80, 80), dtype=bool)
    old = _square_ctx(img, ClassicOptions(window_fill=None), (30, 30, 49, 49))
    new = _square_ctx(img, ClassicOptions(window_fill=0.5), (30, 30, 49, 49))
    r = 1.5 * new.scale[1]
    full, half = grow(old, 1, 1, 40, 40, empty), grow(new, 1, 1, 40, 40, empty)
    assert full.sum() > 0.9 * np.pi * r**2  # the whole window: what lowered Dice
    assert half.sum() <= 1.1 * np.pi * (0.5 * r) ** 2 + 8 and half[40, 40]
    assert not (half & ~full).any()
    assert np.array_equal(grow(old, 1, 2, 40, 40, empty), grow(new, 1, 2, 40, 40, empty))


def test_window_filled_counts_the_rim_of_the_window() -> None:
    yy, xx = np.mgrid[:40, :40]
    win = (xx - 20) ** 2 + (yy - 20) ** 2 <= 100
    assert window_filled(win, win, 0.5)
    assert not window_filled(win & (xx < 20), win, 0.6)  # half the rim
    assert not window_filled((xx - 20) ** 2 + (yy - 20) ** 2 <= 25, win, 0.1)  # an edge inside


def _bright_square(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 60 x 60 one-slice image with a bright 20 x 20 square (the target) and noise."""
    img = np.full((60, 60, 1), 60.0)
    img[20:40, 20:40, 0] = 120.0
    img += np.random.default_rng(seed).normal(0.0, 4.0, img.shape)
    target = np.zeros((60, 60), dtype=bool)
    target[20:40, 20:40] = True
    return img, target


def test_a_negative_click_on_a_one_voxel_rim_removes_the_rim_not_the_target() -> None:
    """The mask is a bright square (the target) plus a one-voxel column of background beside
    it (a spurious rim); the click lies on the rim. The old carve removed the rim and the
    target's column next to it (12 target voxels lost); with ``rim_cut`` only the rim goes."""
    img, target = _bright_square(4)
    base = target.copy()
    base[40, 24:36] = True
    click = Prompts.make(points=[(40, 30)], labels=[0])
    for opt, lost in ((None, 1), (1.0, 0)):
        ctx = _square_ctx(img, ClassicOptions(rim_cut=opt), (20, 20, 39, 39))
        m = prompted_slice(ctx, 1, 0, click, base=base)
        assert not (m & ~target).any()  # the rim goes either way
        assert ((target & ~m).sum() >= lost) if lost else not (target & ~m).any()


def test_rim_cut_keeps_a_cut_whose_click_is_inside_the_mask() -> None:
    mask = np.zeros((30, 30), dtype=bool)
    mask[5:25, 5:25] = True
    cut = np.zeros_like(mask)
    cut[10:15, 10:15] = True
    assert rim_cut(cut, mask, 12, 12) is cut
    edge = np.zeros_like(mask)
    edge[22:25, 10:15] = True
    out = rim_cut(edge, mask, 24, 12)
    assert out[24, 10:15].all() and not out[:24].any()


def test_rim_only_tells_a_trim_from_a_leak() -> None:
    before = np.zeros((30, 30), dtype=bool)
    before[5:25, 5:25] = True
    trim = before.copy()
    trim[24, 8:20] = False
    leak = before.copy()
    leak[15:25, 15:25] = False
    grown = before.copy()
    grown[25, 10] = True
    assert rim_only(before, trim)
    assert not rim_only(before, leak)  # it has an interior: a part, carried on
    assert not rim_only(before, grown)  # an addition
    assert not rim_only(before, np.zeros_like(before))  # emptied: the target ended


def test_a_trimmed_rim_is_not_carried_to_the_other_slices() -> None:
    """A target (120) with a partial-volume column (95) beside it on every slice, held in
    every slice's mask; slice 0 is the anchor. A negative click on slice 6 trims the column
    there. The old propagation carried the trim to every slice up to the anchor and beyond
    (where the neighbouring slices' outline is right, that took the target's rim); with
    ``hold_rim`` the trim stays on its slice."""
    shape = (50, 50, 10)
    img = np.full(shape, 60.0)
    img[15:35, 15:35, :] = 120.0
    img[35, 15:35, :] = 95.0
    img += np.random.default_rng(6).normal(0.0, 3.0, shape)
    start = np.zeros(shape[:2], dtype=bool)
    start[15:36, 15:35] = True
    for opt, carried in ((None, True), (1.0, False)):
        ctx = ClassicContext(img.astype(np.float32), (1.0, 1.0, 2.0), ClassicOptions(hold_rim=opt))
        box_segment(ctx, 1, 0, (15, 15, 34, 34))
        state = SessionState(shape)
        st = state.get(1)
        st.mask[:] = start[:, :, None]
        st.anchors.add(0)
        before = st.mask[:, :, 6].copy()
        after = prompted_slice(ctx, 1, 6, Prompts.make(points=[(35, 25)], labels=[0]), base=before)
        assert rim_only(before, after)
        st.mask[:, :, 6] = after
        st.anchors.add(6)
        list(propagate_delta(ctx, state, 6, before, 1, offset=1))
        changed = [q for q in range(shape[2]) if q != 6 and not np.array_equal(st.mask[:, :, q], start)]
        assert bool(changed) is carried


def test_a_positive_click_next_to_the_mask_adds_the_missed_rim_only() -> None:
    """The target is a bright square; the mask misses its last column (a one-voxel rim) and
    the click lies on that column, next to the mask. The old grow added its seed disk, whose
    voxels beyond the column are background; with ``rim_add`` only the column is added."""
    img, target = _bright_square(8)
    base = target.copy()
    base[39, :] = False
    click = Prompts.make(points=[(39, 30)], labels=[1])
    old = prompted_slice(_square_ctx(img, ClassicOptions(rim_add=None), (20, 20, 39, 39)), 1, 0,
                         click, base=base)
    new = prompted_slice(_square_ctx(img, ClassicOptions(rim_add=1.0), (20, 20, 39, 39)), 1, 0,
                         click, base=base)
    assert (old & ~target).any()  # the seed disk reached the background
    assert not (new & ~target).any() and new[39, 30] and (new & ~base).sum() >= 3


def test_an_addition_that_restarts_the_tracking_past_the_end_stops_where_the_object_ends() -> None:
    """A square target (400 voxels) on slices 0-6, tracked there; slice 6 also holds a part
    beside it (missed, clicked), slice 7 a 120-voxel end and slices 8-11 a 56-voxel run-on of
    the same intensity. The click's addition restarts the tracking past slice 6: the old
    propagation ran on through slice 11; with ``resume_end`` it stops where the tracked area
    falls under ``end_frac`` (0.15) of the clicked slice's (458 voxels), after slice 7.
    ``carry_add`` is off in both runs (it carries the addition by its own model)."""
    shape = (60, 60, 12)
    img = np.full(shape, 60.0)
    img[15:35, 15:35, 0:7] = 120.0
    img[35:41, 20:30, 6] = 120.0
    img[26:38, 18:28, 7] = 120.0
    img[29:36, 19:27, 8:12] = 120.0
    img += np.random.default_rng(7).normal(0.0, 3.0, shape)
    square = np.zeros(shape[:2], dtype=bool)
    square[15:35, 15:35] = True
    for opt, run in ((None, True), (1.0, False)):
        ctx = ClassicContext(img.astype(np.float32), (1.0, 1.0, 2.0),
                             ClassicOptions(resume_end=opt, carry_add=None))
        box_segment(ctx, 1, 0, (15, 15, 34, 34))
        state = SessionState(shape)
        st = state.get(1)
        st.mask[:, :, 0:7] = square[:, :, None]
        st.anchors.add(0)
        before = st.mask[:, :, 6].copy()
        st.mask[:, :, 6] = prompted_slice(ctx, 1, 6, Prompts.make(points=[(38, 25)], labels=[1]),
                                          base=before)
        st.anchors.add(6)
        list(propagate_delta(ctx, state, 6, before, 1, offset=1))
        assert st.mask[:, :, 7].sum() >= 100  # the object's end is taken either way
        assert bool(st.mask[:, :, 8:].any()) is run
