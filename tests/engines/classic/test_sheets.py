"""The classic engine's end at a thin dark sheet across the target (``sheet_cover``,
``engines/classic/sheets.py``): a vertebral body tracked from one box stops at its discs, a
dimming of the whole slice is no sheet, and with the option off nothing changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segloop.engines.classic import ClassicEngine
from segloop.engines.classic.sheets import column_dips, sheet_cover
from segloop.eval.protocol import box_from_mask, key_slice
from segloop.io.volume import Volume
from segloop.types import Prompts

from .plated_column import SPACING as _SP
from .plated_column import plated_column


def _column(discs: bool, dim_slices: slice | None = None) -> tuple[Volume, np.ndarray]:
    """A textured column (radius 12 mm; 200 + an in-plane pattern of sd 40, the same on every
    slice, like bone) on a background of 60, noise 15, 2 mm slices. With ``discs``: plates 2
    slices thick of intensity 150, tilted (0.1 slice per voxel along x), centred at z 14 and
    30; the truth is the body between them. ``dim_slices``: slices where the whole image,
    column and surroundings, is 50 darker (an acquisition's slice-wise fluctuation)."""
    img, col, zc, rng = plated_column(48, (14, 30) if discs else ())
    truth = col & (zc > 15) & (zc < 29) if discs else col.copy()
    if dim_slices is not None:
        img[:, :, dim_slices] -= 50.0
    img += rng.normal(0, 15.0, img.shape)
    vol = Volume(data=img.astype(np.float32), affine=np.diag([*_SP, 1.0]), source_format="npz",
                 modality="CT")
    return vol, np.asarray(truth)


def _box_only(vol: Volume, truth: np.ndarray, z: int, **opts: float | None) -> np.ndarray:
    session = ClassicEngine(**opts).open(vol)  # type: ignore[arg-type]
    session.segment_slice(z, Prompts(box=box_from_mask(truth[:, :, z])))
    results = list(session.propagate(z))
    mask = session.mask()
    for res in results:  # each slice yielded once, with its final mask
        assert np.array_equal(res.mask, mask[:, :, res.z])
    assert len({res.z for res in results}) == len(results)
    assert [res.done for res in results] == list(range(1, len(results) + 1))
    return mask


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_column_dips_and_cover_on_a_hand_case() -> None:
    """One column of five voxels per slice; a tilted dark plate dips every column once within
    two slices; a single dark voxel is one column of five."""
    stack = np.full((5, 1, 7), 100.0)
    for x in range(5):
        stack[x, 0, 2 + (x >= 3)] = 40.0  # the plate: slice 2 for x < 3, slice 3 beyond
    masks = np.ones(stack.shape, dtype=bool)
    dips = column_dips(stack, masks, 1, 30.0)
    assert dips[:, 0, 2].tolist() == [True, True, True, False, False]
    assert dips[:, 0, 3].tolist() == [False, False, False, True, True]
    assert sheet_cover(masks, dips, 2)[2] == 1.0
    assert sheet_cover(masks, dips, 1)[2] == 0.6
    assert not column_dips(stack, masks, 1, 60.0).any()  # not deep enough


def test_a_dark_sheet_across_a_stack_ends_the_target() -> None:
    """A box on one body of the column: without the option the tracking runs through both
    tilted plates to the volume's ends (Dice 0.45); with it, it ends at each plate."""
    vol, truth = _column(discs=True)
    z = key_slice(truth)
    old = _box_only(vol, truth, z, sheet_cover=None)
    new = _box_only(vol, truth, z, sheet_cover=0.5, sheet_column=None)
    assert _dice(old, truth) < 0.6
    assert _dice(new, truth) >= 0.9, _dice(new, truth)
    beyond = ~truth.any(axis=(0, 1))
    assert new[:, :, beyond].sum() <= 0.05 * old[:, :, beyond].sum()


def test_a_dimmed_slice_of_the_whole_image_is_no_sheet() -> None:
    """The column without plates, two slices of the whole image 50 darker: every column of the
    target dips there, but so does the ring around it, so the target goes on; without the
    ring's guard (``sheet_ring`` above 1) the dimming would end it."""
    vol, truth = _column(discs=False, dim_slices=slice(30, 32))
    z = 17
    old = _box_only(vol, truth, z, sheet_cover=None)
    new = _box_only(vol, truth, z, sheet_cover=0.5)
    unguarded = _box_only(vol, truth, z, sheet_cover=0.5, sheet_ring=1.1)
    assert np.array_equal(new, old)
    assert _dice(old, truth) > 0.95
    assert _dice(unguarded, truth) < 0.85


@pytest.mark.parametrize(("label", "floor"), [("30", 0.75), ("31", 0.72)])
def test_one_box_on_a_vertebra_ends_at_its_discs(shared_data: Path, label: str, floor: float) -> None:
    """Vertebrae L2 (label 30) and L1 (31) of the TotalSegmentator example CT (3 mm voxels)
    from one box: without the option the tracking runs through the discs into the next
    vertebrae to the volume's ends (0.423 / 0.430); with it, it ends at the discs (0.794 /
    0.767 when measured)."""
    from segloop.io import load_label, load_volume

    vol = load_volume(shared_data / "totalseg" / "example_ct_sm.nii.gz")
    can = vol.canonical()
    truth = np.asarray(load_label(shared_data / "totalseg" / "example_seg.nii.gz", vol, label),
                       dtype=bool)
    z = key_slice(truth)
    old = _box_only(can, truth, z, sheet_cover=None)
    new = _box_only(can, truth, z, sheet_cover=0.5, sheet_column=None)
    assert _dice(old, truth) < 0.5
    assert _dice(new, truth) >= floor, _dice(new, truth)


def test_a_positive_click_past_the_sheet_does_not_run_on_through_the_next_copy() -> None:
    """After the box, the tracking ended at the plates; a positive click on a slice the sheet
    emptied (the plate's far edge, say) takes its own slice, but the re-tracking outward from
    it does not run on through the next body to the volume's end."""
    vol, truth = _column(discs=True)
    z = key_slice(truth)
    session = ClassicEngine(sheet_cover=0.5, sheet_resume=None).open(vol)
    session.segment_slice(z, Prompts(box=box_from_mask(truth[:, :, z])))
    list(session.propagate(z))
    after_box = session.mask()
    filled = np.flatnonzero(after_box.any(axis=(0, 1)))
    zc = int(filled.max()) + 1  # the first slice past the end
    list(session.refine(zc, Prompts.make(points=[(24, 24)], labels=[1])))
    mask = session.mask()
    assert mask[:, :, zc].any()
    assert not mask[:, :, zc + 1:].any()


def test_column_dips_running_maxima_match_the_window_definition() -> None:
    """``column_dips`` takes its side maxima with running filters; on random stacks and masks
    (chains shorter and longer than the window) it equals the per-slice window loop."""
    def by_loop(stack: np.ndarray, masks: np.ndarray, w: int, depth: float) -> np.ndarray:
        n = stack.shape[2]
        out = np.zeros(stack.shape, dtype=bool)
        neg = np.float32(-np.inf)
        for i in range(1, n - 1):
            lo, hi = max(0, i - w), min(n, i + w + 1)
            left = np.where(masks[:, :, lo:i], stack[:, :, lo:i], neg).max(axis=2)
            right = np.where(masks[:, :, i + 1:hi], stack[:, :, i + 1:hi], neg).max(axis=2)
            out[:, :, i] = masks[:, :, i] & (np.minimum(left, right) - stack[:, :, i] > depth)
        return out

    rng = np.random.default_rng(1)
    for _ in range(200):
        n, w = int(rng.integers(1, 20)), int(rng.integers(1, 25))
        stack = rng.normal(0, 1, (7, 5, n)).astype(np.float32)
        masks = rng.random((7, 5, n)) < 0.7
        assert np.array_equal(column_dips(stack, masks, w, 0.5), by_loop(stack, masks, w, 0.5))


def test_sheet_column_keeps_each_column_up_to_its_own_dip() -> None:
    """The column with two tilted plates (``test_sheets._column``), one box: ``sheet_cover``
    empties the plate's whole band from its first slice; with ``sheet_column`` each column
    of the band's slices is kept up to its own dip (the tilt puts the plate a slice or two
    further on one side), so the body's tilted ends come back without running past them."""
    vol, truth = _column(discs=True)
    z = key_slice(truth)
    band = _box_only(vol, truth, z, sheet_cover=0.5, sheet_column=None)
    cols = _box_only(vol, truth, z, sheet_cover=0.5, sheet_column=1.0)
    assert _dice(cols, truth) >= _dice(band, truth) + 0.008, (_dice(band, truth), _dice(cols, truth))
    extra = cols & ~band
    assert extra.any()
    assert (extra & truth).sum() >= 0.7 * extra.sum()  # mostly the body (74 % when written)
    beyond = ~truth.any(axis=(0, 1))
    assert not cols[:, :, beyond].any()
