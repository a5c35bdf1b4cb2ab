"""Quality of the classic engine: synthetic shapes, points-only prompts, and real cases."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from segloop.engines import drive, get_engine
from segloop.engines.classic import ClassicEngine
from segloop.errors import EngineError, PromptError
from segloop.eval.protocol import box_from_mask, key_slice, run_interaction
from segloop.io.volume import Volume
from segloop.types import Prompts

from ..contract import iou
from ..synthetic import ellipsoid, phantom
from .heldout import heldout_case


def _box_and_propagate(vol: Volume, truth: np.ndarray) -> np.ndarray:
    session = ClassicEngine().open(vol)
    z = key_slice(truth)
    session.segment_slice(z, Prompts(box=box_from_mask(truth[:, :, z])))
    drive(session.propagate(z))
    return session.mask()


@pytest.mark.parametrize("spacing", [(0.8, 0.8, 2.5), (1.5, 1.5, 5.0)])
def test_bright_sphere_and_dark_ellipsoid(spacing: tuple[float, float, float]) -> None:
    ph = phantom(shape=(64, 60, 14), spacing=spacing, noise=15.0, seed=1)
    assert np.array_equal(ph.volume.canonical().data, ph.canonical_data)
    assert iou(_box_and_propagate(ph.volume, ph.bright), ph.bright) > 0.9
    assert iou(_box_and_propagate(ph.volume, ph.dark), ph.dark) > 0.9


def test_ct_like_sphere_in_hu() -> None:
    shape, sp = (70, 70, 24), (0.7, 0.7, 3.0)
    sphere = ellipsoid(shape, sp, (35, 35, 12), (14.0, 14.0, 14.0))
    rng = np.random.default_rng(3)
    img = np.where(sphere, 60.0, 0.0) + rng.normal(0, 8, shape)
    img[:, :8] = -1000.0  # air beside the body
    vol = Volume(data=img.astype(np.int16), affine=np.diag([*sp, 1.0]), source_format="npz", modality="CT")
    assert iou(_box_and_propagate(vol, sphere), sphere) > 0.9


def test_points_only() -> None:
    ph = phantom(noise=10.0, seed=2)
    session = ClassicEngine().open(ph.volume)
    z = key_slice(ph.dark)
    cx, cy = (round(float(v)) for v in np.argwhere(ph.dark[:, :, z]).mean(axis=0))
    m2 = session.segment_slice(z, Prompts.make(points=[(cx, cy)], labels=[1]))
    assert iou(m2, ph.dark[:, :, z]) > 0.8
    drive(session.propagate(z))
    assert iou(session.mask(), ph.dark) > 0.8


def test_negative_point_alone_is_refused() -> None:
    ph = phantom()
    session = ClassicEngine().open(ph.volume)
    with pytest.raises(EngineError):
        session.segment_slice(3, Prompts.make(points=[(2, 2)], labels=[0]))
    with pytest.raises(PromptError):
        session.segment_slice(3, Prompts.make(points=[(2, 2)], labels=[7]))


def test_clicks_fix_a_leak_and_a_miss() -> None:
    """A negative click removes a spurious blob; a positive click recovers a missed one."""
    ph = phantom(seed=4)
    session = ClassicEngine().open(ph.volume)
    z = key_slice(ph.bright)
    session.segment_slice(z, Prompts(box=box_from_mask(ph.bright[:, :, z])))
    drive(session.propagate(z))
    good = session.mask()
    # pretend slice z+1 wrongly contains the dark object too, then correct it
    spoiled = good.copy()
    spoiled[:, :, z + 1] |= ph.dark[:, :, z + 1]
    session.set_mask(spoiled)
    x, y = (int(v) for v in np.argwhere(ph.dark[:, :, z + 1]).mean(axis=0).round())
    drive(session.refine(z + 1, Prompts.make(points=[(x, y)], labels=[0])))
    assert not (session.mask()[:, :, z + 1] & ph.dark[:, :, z + 1]).any()
    assert iou(session.mask()[:, :, z + 1], ph.bright[:, :, z + 1]) > 0.85
    # now erase slice z-1 and get it back with one positive click
    erased = session.mask()
    erased[:, :, z - 1] = False
    session.set_mask(erased)
    x, y = (int(v) for v in np.argwhere(ph.bright[:, :, z - 1]).mean(axis=0).round())
    drive(session.refine(z - 1, Prompts.make(points=[(x, y)], labels=[1])))
    assert iou(session.mask()[:, :, z - 1], ph.bright[:, :, z - 1]) > 0.85


def test_dark_core_inside_a_tight_box_is_not_the_target() -> None:
    """A target with a dark core (gas in a bowel loop, necrosis in a lesion) next to tissue of
    its own intensity: the dark core alone does not span the tight box, so the target does."""
    shape, sp = (64, 64, 8), (1.0, 1.0, 3.0)
    target = ellipsoid(shape, sp, (32, 32, 4), (12.0, 12.0, 12.0))
    core = ellipsoid(shape, sp, (32, 32, 4), (6.0, 6.0, 6.0))
    img = np.full(shape, 100.0)
    beside = (np.abs(np.arange(shape[0]) - 32) > 13)[:, None, None]
    img[np.broadcast_to(beside, shape)] = 160.0  # same tissue on both sides, outside the box
    img[target] = 160.0
    img[core] = 0.0
    img += np.random.default_rng(0).normal(0, 10, shape)
    vol = Volume(data=img.astype(np.float32), affine=np.diag([*sp, 1.0]), source_format="npz", modality="CT")
    m2 = ClassicEngine().open(vol).segment_slice(4, Prompts(box=box_from_mask(target[:, :, 4])))
    assert iou(m2, target[:, :, 4]) > 0.8


def _ball_on_slab() -> tuple[Volume, np.ndarray]:
    """A ball whose lower half sinks into a slab of the same intensity (an organ against a
    neighbour it cannot be told from); the truth is the ball above the slab."""
    shape, sp = (64, 64, 24), (1.0, 1.0, 3.0)
    ball = ellipsoid(shape, sp, (32, 32, 13), (12.0, 12.0, 15.0))
    slab = np.zeros(shape, dtype=bool)
    slab[8:56, 8:56, :11] = True
    img = np.full(shape, 100.0)
    img[ball | slab] = 180.0
    img += np.random.default_rng(0).normal(0, 10, shape)
    vol = Volume(data=img.astype(np.float32), affine=np.diag([*sp, 1.0]), source_format="npz", modality="CT")
    return vol, ball & ~slab


def test_propagation_does_not_flood_a_same_intensity_neighbour() -> None:
    vol, truth = _ball_on_slab()
    mask = _box_and_propagate(vol, truth)
    key_area = int(truth[:, :, key_slice(truth)].sum())
    # without the area rules the mask grows into the slab, to 3x the key slice's area;
    # with them, at most area_cap (1.2) times it (2.05 leaves room for the key slice's own
    # outline, which is not the truth's)
    assert mask.sum(axis=(0, 1)).max() <= 2.05 * key_area
    assert iou(mask[:, :, 11:], truth[:, :, 11:]) > 0.9


def test_negative_click_in_the_middle_of_a_leak_ends_it() -> None:
    """A negative click at the centre of a leaked slice removes it and the slices beyond it
    (away from the prompted slice); towards the prompted slice it may take back more of
    the leak, but never any of the target, and adds nothing."""
    vol, truth = _ball_on_slab()
    # support_min off: with it the box's tracking already ends where the ball's edge goes
    # (test_support.py), and this test needs the leak to click in
    session = ClassicEngine(support_min=None).open(vol)
    z = key_slice(truth)
    session.segment_slice(z, Prompts(box=box_from_mask(truth[:, :, z])))
    drive(session.propagate(z))
    before = session.mask()
    assert before[:, :, 5].any()  # the leak into the slab
    cx, cy = (int(v) for v in np.argwhere(before[:, :, 5]).mean(axis=0).round())
    drive(session.refine(5, Prompts.make(points=[(cx, cy)], labels=[0])))
    after = session.mask()
    assert not after[:, :, :6].any()
    assert not (after[:, :, 6:] & ~before[:, :, 6:]).any()
    assert np.array_equal(after[:, :, 6:] & truth[:, :, 6:], before[:, :, 6:] & truth[:, :, 6:])


def test_get_engine_gives_classic() -> None:
    assert isinstance(get_engine("classic"), ClassicEngine)
    assert ClassicEngine.unavailable_reason() is None


# measured on ../shared/data/cases.csv (benchmarks/bench_classic.py): floors ~0.1 below
# (measured 0.869/0.875, 0.910/0.916, 0.812/0.892 after the box / after 2 clicks)
REAL_FLOORS = {"ct_spleen": (0.77, 0.77), "mr_liver": (0.81, 0.82), "mr_breast_lesion": (0.71, 0.79)}


@pytest.mark.shared_data
@pytest.mark.parametrize("case_id", sorted(REAL_FLOORS))
def test_real_cases(shared_data: Path, case_id: str) -> None:
    from segloop.io import load_label, load_volume

    with (shared_data / "cases.csv").open() as f:
        row = next(r for r in csv.DictReader(f) if r["case_id"] == case_id)
    vol = load_volume(shared_data / row["image"])
    truth = load_label(shared_data / row["label"], vol, row["label_value"])
    run = run_interaction(ClassicEngine(), vol, truth, clicks=2)
    dice = [2 * (m & truth).sum() / (m.sum() + truth.sum()) for m in run.masks]
    floor0, floor2 = REAL_FLOORS[case_id]
    assert dice[0] >= floor0, f"{case_id}: Dice {dice[0]:.3f} after the box, floor {floor0}"
    assert dice[-1] >= floor2, f"{case_id}: Dice {dice[-1]:.3f} after 2 clicks, floor {floor2}"


# held-out structures (benchmarks/heldout_cases.csv: not designed on, used only to validate
# general changes): floors ~0.1 below the measured 0.348/0.467, 0.402/0.491, 0.893/0.893,
# 0.718/0.822 (box / 2 clicks); before the area rules, the tight-box check and the correction
# changes the first two measured 0.240/0.298 and 0.168/0.207
HELDOUT_FLOORS = {"ho_ct_iliopsoas_l": (0.25, 0.37), "ho_ct_duodenum": (0.30, 0.39),
                  "ho_mr_kidney_l": (0.79, 0.79), "ho_ct_gallbladder": (0.62, 0.72)}


@pytest.mark.shared_data
@pytest.mark.parametrize("case_id", sorted(HELDOUT_FLOORS))
def test_heldout_cases(shared_data: Path, case_id: str) -> None:
    vol, truth = heldout_case(shared_data, case_id)
    run = run_interaction(ClassicEngine(), vol, truth, clicks=2)
    dice = [2 * (m & truth).sum() / (m.sum() + truth.sum()) for m in run.masks]
    floor0, floor2 = HELDOUT_FLOORS[case_id]
    assert dice[0] >= floor0, f"{case_id}: Dice {dice[0]:.3f} after the box, floor {floor0}"
    assert dice[-1] >= floor2, f"{case_id}: Dice {dice[-1]:.3f} after 2 clicks, floor {floor2}"


def test_unknown_option_is_refused() -> None:
    with pytest.raises(EngineError, match="bogus"):
        ClassicEngine(bogus=1.0)
