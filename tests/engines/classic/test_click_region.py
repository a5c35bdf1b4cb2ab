"""A positive click that the object's model calls background takes the region a local model
of the click's tissue explains (issue 17, option ``own_region``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segloop.engines.classic.click_region import local_region
from segloop.engines.classic.context import ClassicContext
from segloop.engines.classic.options import ClassicOptions


def test_the_local_region_takes_the_whole_missed_patch_and_stops_at_its_edge() -> None:
    """A darker patch (30 x 12 voxels) beside the mask, in brighter surroundings; the click
    is in its middle. The local model (the click's tissue against the tissue beyond the
    reach) takes the patch, not the surroundings nor the mask."""
    img = np.full((80, 80, 1), 150.0)
    img[20:50, 30:42, 0] = 90.0  # the missed patch
    img[20:50, 42:60, 0] = 120.0  # the object's mask
    img += np.random.default_rng(4).normal(0.0, 4.0, img.shape)
    ctx = ClassicContext(img.astype(np.float32), (1.0, 1.0, 2.0), ClassicOptions(own_region=1.0))
    ctx.sigma_mm[1] = 0.5
    current = np.zeros((80, 80), dtype=bool)
    current[20:50, 42:60] = True
    region = local_region(ctx, 1, 0, 35, 36, current, 25.0)
    patch = np.zeros((80, 80), dtype=bool)
    patch[20:50, 30:42] = True
    assert not (region & current).any()
    assert (region & patch).sum() >= 0.9 * patch.sum()
    assert (region & ~patch).sum() <= 0.05 * patch.sum()


def test_no_local_region_where_the_click_s_tissue_is_the_surroundings_too() -> None:
    """A patch of the surroundings' own noisy tissue: the click's density and the ring's
    overlap, so the local model has no evidence and gives no region (the flood acts)."""
    img = 150.0 + np.random.default_rng(5).normal(0.0, 4.0, (80, 80, 1))
    ctx = ClassicContext(img.astype(np.float32), (1.0, 1.0, 2.0), ClassicOptions(own_region=1.0))
    ctx.sigma_mm[1] = 0.5
    current = np.zeros((80, 80), dtype=bool)
    current[20:50, 42:60] = True
    assert not local_region(ctx, 1, 0, 35, 36, current, 25.0).any()


@pytest.mark.shared_data
def test_a_click_on_the_tumours_empty_end_slice_takes_its_own_region(shared_data: Path) -> None:
    """The pyradiomics brain MR tumour (256 x 256 x 25): the box (slice 16) and propagation
    miss slice 11, and the second simulated click is positive there, on a slice where the
    object is absent. The similarity flood takes 829 voxels for the 378 of the target there
    (473 false); the local model takes the tumour's part (about three quarters of what it
    adds on the slice is target), and Dice after two clicks rises from 0.769 to over 0.80."""
    from segloop.engines import drive
    from segloop.engines.classic import ClassicEngine
    from segloop.eval.protocol import box_from_mask, key_slice, next_click
    from segloop.io import load_label, load_volume
    from segloop.types import Prompts

    vol = load_volume(shared_data / "pyradiomics" / "brain1_image.nrrd")
    can = vol.canonical()
    truth = np.asarray(load_label(shared_data / "pyradiomics" / "brain1_label.nrrd", vol, "1"),
                       dtype=bool)

    def two_clicks(engine: ClassicEngine) -> tuple[float, int, int]:
        session = engine.open(can)
        z = key_slice(truth)
        session.segment_slice(z, Prompts(box=box_from_mask(truth[:, :, z])))
        drive(session.propagate(z))
        added = np.zeros(truth.shape[:2], dtype=bool)
        for _ in range(2):
            before = session.mask()
            click = next_click(before, truth, can.spacing)
            assert click is not None and click.label == 1
            drive(session.refine(click.z, Prompts.make(points=[(click.x, click.y)], labels=[1])))
            after = session.mask()
            added = after[:, :, click.z] & ~before[:, :, click.z]
            tz = truth[:, :, click.z]
        m = session.mask()
        dice = 2.0 * float((m & truth).sum()) / float(m.sum() + truth.sum())
        return dice, int((added & tz).sum()), int((added & ~tz).sum())

    dice_old, tp_old, fp_old = two_clicks(ClassicEngine(own_region=None))
    dice, tp, fp = two_clicks(ClassicEngine(own_region=1.0, own_region_empty=1.0))
    assert fp <= 0.35 * tp, f"added {tp} true and {fp} false voxels (old {tp_old} / {fp_old})"
    assert dice >= 0.80, f"Dice after two clicks {dice:.3f} (old {dice_old:.3f})"


def test_on_an_empty_slice_a_much_smaller_local_region_replaces_the_model_s() -> None:
    """Key slice: a bright square (120) on dark (60). Slice 1, where the object is absent: a
    wide target-like field (112) holding a brighter 7 x 7 patch (135), the click in its
    middle. The object's model calls the whole field target (811 voxels, 762 beyond the
    patch: the hippocampus click that took its surroundings); with ``local_empty`` the local
    model of the click's tissue, less than half as large, takes the patch instead."""
    from segloop.engines.classic.segment2d import box_segment, grow

    rng = np.random.default_rng(9)
    img = np.full((80, 80, 2), 60.0)
    img[30:50, 30:50, 0] = 120.0
    img[25:55, 25:55, 1] = 112.0
    img[37:44, 37:44, 1] = 135.0
    img += rng.normal(0.0, 3.0, img.shape)
    empty = np.zeros((80, 80), dtype=bool)
    patch = np.zeros((80, 80), dtype=bool)
    patch[37:44, 37:44] = True
    regions = []
    for opt in (None, 0.5):
        ctx = ClassicContext(img.astype(np.float32), (1.0, 1.0, 2.0), ClassicOptions(local_empty=opt))
        box_segment(ctx, 1, 0, (30, 30, 49, 49))
        regions.append(grow(ctx, 1, 1, 40, 40, empty))
    old, new = regions
    assert (old & ~patch).sum() > 5 * patch.sum()  # what lowered Dice
    assert (new & patch).sum() >= 0.8 * patch.sum() and (new & ~patch).sum() <= 0.1 * patch.sum()
