"""The classic engine carries a positive click's addition to the further slices by its own
intensity evidence (issue 17, option ``carry_add``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segloop.engines.classic.additions import addition_model, carry_addition, carry_model
from segloop.engines.classic.context import ClassicContext
from segloop.engines.classic.options import ClassicOptions


def _context(img: np.ndarray, **opts: float | None) -> ClassicContext:
    ctx = ClassicContext(img.astype(np.float32), (1.0, 1.0, 2.0), ClassicOptions(**opts))  # type: ignore[arg-type]
    ctx.sigma_mm[1] = 0.5
    return ctx


def test_a_carried_addition_stays_inside_the_previous_one_and_its_tissue() -> None:
    """A target (150) found on both slices, and beside it a missed part of its own darker
    tissue (60) on a background of 100. A click added the darker part on slice 0; on slice
    1 the darker part is narrower. The carried addition is the darker tissue inside the
    previous addition: never beyond it, never background, never the mask again, and no
    more than ``growth`` times the previous addition's area."""
    img = np.full((48, 48, 2), 100.0)
    img[10:30, 10:20, :] = 150.0  # the target, in the mask on both slices
    img[10:30, 20:30, 0] = 60.0  # its darker part, added by the click on slice 0
    img[14:26, 20:30, 1] = 60.0  # ... narrower on slice 1
    img += np.random.default_rng(11).normal(0.0, 4.0, img.shape)
    ctx = _context(img, carry_add=1.0)
    mask0 = np.zeros((48, 48), dtype=bool)
    mask0[10:30, 10:20] = True
    added = np.zeros((48, 48), dtype=bool)
    added[10:30, 20:30] = True
    model = addition_model(ctx, 1, 0, added, mask0 | added)
    assert model is not None
    carried = carry_addition(ctx, 1, 1, mask0, added, model, 1.0)
    truth = np.zeros((48, 48), dtype=bool)
    truth[14:26, 20:30] = True
    assert not (carried & ~added).any()  # inside the previous addition
    assert not (carried & mask0).any()
    assert (carried & truth).sum() >= 0.85 * truth.sum()
    assert (carried & ~truth).sum() <= 0.1 * truth.sum()  # not the background beside it
    half = carry_addition(ctx, 1, 1, mask0, added, model, 0.5)
    assert half.sum() <= 0.5 * added.sum()  # the growth bound


def test_only_an_addition_to_a_slice_that_held_the_object_is_carried() -> None:
    """``carry_model``: none without ``carry_add``, none for a change that removed voxels,
    none from a slice where the object was absent."""
    img = np.full((48, 48, 3), 100.0)
    img[20:30, 20:30, :] = 150.0
    img += np.random.default_rng(12).normal(0.0, 4.0, img.shape)
    before = np.zeros((48, 48), dtype=bool)
    before[10:20, 10:20] = True
    near, apart = before.copy(), before.copy()
    near[20:30, 12:20] = True  # touches the mask
    apart[26:36, 26:36] = True  # three voxels away from it
    assert carry_model(_context(img, carry_add=None), 1, 1, before, near) is None  # option off
    on = _context(img, carry_add=1.0)
    assert carry_model(on, 1, 1, before, near) is not None
    assert carry_model(on, 1, 1, before, apart) is not None
    assert carry_model(on, 1, 1, near, before) is None  # a removal is not carried
    empty = np.zeros_like(before)
    assert carry_model(on, 1, 1, empty, near & ~before) is None  # the object was absent


@pytest.mark.shared_data
def test_a_positive_click_below_a_missed_stomach_carries_through_z(shared_data: Path) -> None:
    """The stomach of the TotalSegmentator example DICOM CT (512 x 512 x 20): the box and
    propagation miss the lower slices and part of the wall (Dice 0.765); the first
    simulated click is positive, on slice 5. Re-tracking with the stomach's model carries
    its addition to a few slices (Dice 0.792); carried by its own evidence it reaches on
    through the slices (Dice 0.846, the default ``carry_add=1``), and what it adds off the
    clicked slice is target."""
    from segloop.engines import drive
    from segloop.engines.classic import ClassicEngine
    from segloop.eval.protocol import box_from_mask, key_slice, next_click
    from segloop.io import load_label, load_volume
    from segloop.types import Prompts

    vol = load_volume(shared_data / "totalseg" / "example_ct_dicom")
    can = vol.canonical()
    truth = np.asarray(load_label(shared_data / "totalseg" / "example_seg_dicom.nii.gz", vol, "6"),
                       dtype=bool)

    def one_click(engine: ClassicEngine) -> tuple[float, np.ndarray]:
        session = engine.open(can)
        z = key_slice(truth)
        session.segment_slice(z, Prompts(box=box_from_mask(truth[:, :, z])))
        drive(session.propagate(z))
        before = session.mask()
        click = next_click(before, truth, can.spacing)
        assert click is not None and click.label == 1
        drive(session.refine(click.z, Prompts.make(points=[(click.x, click.y)], labels=[1])))
        after = session.mask()
        off = after & ~before
        off[:, :, click.z] = False
        return 2.0 * float((after & truth).sum()) / float(after.sum() + truth.sum()), off

    dice_old, off_old = one_click(ClassicEngine(carry_add=None))
    dice, off = one_click(ClassicEngine())
    assert dice >= 0.83, f"Dice after one click {dice:.3f} (without carrying {dice_old:.3f})"
    assert (off & truth).sum() >= 3 * (off_old & truth).sum()
    assert (off & truth).sum() >= 0.85 * off.sum()
