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

from .contract import iou
from .synthetic import ellipsoid, phantom


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


def test_get_engine_gives_classic() -> None:
    assert isinstance(get_engine("classic"), ClassicEngine)
    assert ClassicEngine.unavailable_reason() is None


# measured on ../shared/data/cases.csv (benchmarks/bench_classic.py): floors ~0.1 below
# (measured 0.870/0.876, 0.913/0.920, 0.753/0.839 after the box / after 2 clicks)
REAL_FLOORS = {"ct_spleen": (0.77, 0.77), "mr_liver": (0.81, 0.82), "mr_breast_lesion": (0.65, 0.73)}


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


def test_unknown_option_is_refused() -> None:
    with pytest.raises(EngineError, match="bogus"):
        ClassicEngine(bogus=1.0)
