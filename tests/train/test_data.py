"""Training data: patient splits, prompt sampling, clips, folder and manifest readers (no torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segloop.errors import InputError
from segloop.train.data import ClipDataset, sample_prompt
from segloop.train.records import ImageRecord
from segloop.train.sources import (
    load_folder_records,
    load_folders,
    load_manifest_records,
    split_patients,
    split_records,
)

from .synthetic import write_disc_folders, write_manifest


def test_split_never_puts_a_patient_on_both_sides() -> None:
    rng = np.random.default_rng(0)
    # many slices per patient, in random order
    patients = [f"p{int(v)}" for v in rng.integers(0, 7, size=200)]
    recs = [ImageRecord(f"s{i}", p, np.zeros((1, 4, 4), np.uint8), np.ones((1, 4, 4), bool))
            for i, p in enumerate(patients)]
    for seed in range(20):
        train, val = split_records(recs, 0.3, seed)
        tp, vp = {r.patient_id for r in train}, {r.patient_id for r in val}
        assert not tp & vp
        assert tp | vp == set(patients)
        assert len(train) + len(val) == len(recs)
        assert val
    # seeded: the same seed gives the same split, another seed may differ
    assert split_patients(patients, 0.3, 3) == split_patients(patients, 0.3, 3)
    assert len({frozenset(split_patients(patients, 0.3, s)[1]) for s in range(10)}) > 1
    # a single patient is never split
    assert split_patients(["a", "a"], 0.5, 0) == ({"a"}, set())


def test_patient_pattern_groups_2d_slices(tmp_path: Path) -> None:
    from PIL import Image

    for d in ("im", "mk"):
        (tmp_path / d).mkdir()
    for pat in range(4):
        for s in range(3):
            name = f"pat{pat}_slice{s}.png"
            Image.fromarray(np.full((8, 8), 50, np.uint8)).save(tmp_path / "im" / name)
            m = np.zeros((8, 8), np.uint8)
            m[2:5, 2:5] = 255
            Image.fromarray(m).save(tmp_path / "mk" / name)
    train, val = load_folders(tmp_path / "im", tmp_path / "mk", val_fraction=0.25, seed=0,
                              patient_pattern=r"(pat\d+)_")
    assert {r.patient_id for r in train}.isdisjoint({r.patient_id for r in val})
    assert len(val) == 3 and len(train) == 9


def test_folders_with_splits_and_errors(tmp_path: Path) -> None:
    images, masks = write_disc_folders(tmp_path, 3, 2, size=40)
    train, val = load_folders(images, masks, val_fraction=0.2, seed=0)
    assert len(train) == 3 and len(val) == 2
    r = train[0]
    assert r.frames.shape == (1, 40, 40, 3) and r.frames.dtype == np.uint8
    assert r.truth.shape == (1, 40, 40) and r.truth.dtype == bool and r.truth.any()
    (masks / "train" / "train000.png").unlink()
    with pytest.raises(InputError, match="no mask"):
        load_folder_records(images / "train", masks / "train")
    with pytest.raises(InputError, match="not a folder"):
        load_folder_records(tmp_path / "nope", masks)


def test_manifest_records_use_patient_ids(tmp_path: Path) -> None:
    path = write_manifest(tmp_path / "d", 4, patients=["a", "a", "b", "c"])
    recs = load_manifest_records(path, None)
    assert [r.patient_id for r in recs] == ["a", "a", "b", "c"]
    r = recs[0]
    assert r.frames.shape == (8, 48, 48) and r.frames.dtype == np.uint8  # (Z, Y, X)
    assert r.truth.shape == (8, 48, 48) and r.truth[4].any() and not r.truth[0].any()
    for seed in range(5):
        train, val = split_records(recs, 0.34, seed)
        assert {r.patient_id for r in train}.isdisjoint({r.patient_id for r in val})
        # both cases of patient a stay together
        assert sum(r.patient_id == "a" for r in train) in (0, 2)


def test_prompts_stay_in_bounds_and_follow_the_truth() -> None:
    mask = np.zeros((30, 40), bool)
    mask[10:20, 5:15] = True
    exact = sample_prompt(mask, None)
    assert exact.box == (5.0, 10.0, 14.0, 19.0) and len(exact.points) == 0
    rng = np.random.default_rng(0)
    modes = set()
    for _ in range(200):
        p = sample_prompt(mask, rng, jitter=0.3)
        if p.box is not None:
            x0, y0, x1, y1 = p.box
            assert 0 <= x0 <= x1 <= 39 and 0 <= y0 <= y1 <= 29
            assert abs(x0 - 5) <= 3 + 1e-9 and abs(y1 - 19) <= 3 + 1e-9
        assert p.box is not None or len(p.points) > 0
        for (x, y), lab in zip(p.points.astype(int), p.labels, strict=True):
            assert mask[y, x] == bool(lab)
        modes.add((p.box is not None, len(p.points) > 0))
    assert modes == {(True, False), (True, True), (False, True)}
    with pytest.raises(InputError):
        sample_prompt(np.zeros((4, 4), bool), rng)


def test_clips_are_consecutive_and_start_on_the_target() -> None:
    truth = np.zeros((6, 8, 8), bool)
    truth[1:5, 2:6, 2:6] = True
    frames = np.arange(6, dtype=np.uint8)[:, None, None] * np.ones((6, 8, 8), np.uint8)
    ds = ClipDataset([ImageRecord("v", "v", frames, truth)], 3, np.random.default_rng(0))
    assert len(ds) == 4
    seen = set()
    for i in ds.epoch_order():
        for _ in range(10):
            s = ds.sample(i)
            idx = s.frames[:, 0, 0].astype(int)
            assert s.truth[0].any()
            step = np.diff(idx)
            assert len(idx) <= 3 and (np.all(step == 1) or np.all(step == -1))
            seen.add(int(step[0]) if len(step) else 0)
    assert {1, -1} <= seen
    state = ds.rng_state()
    a = [ds.sample(0).prompt.box for _ in range(3)]
    ds.set_rng_state(state)
    assert [ds.sample(0).prompt.box for _ in range(3)] == a
    val = ds.validation_samples()
    assert len(val) == 2 and val[0].truth[0].sum() == 16
