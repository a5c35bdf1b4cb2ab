"""``segloop train --model sammed3d``: safe .pkl loading, row checks, the seed's CLI end to end."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segloop.errors import InputError
from segloop.train.sammed3d.data import check_rows, load_pickle_array, read_seed_csv

SEGLOOP = str(Path(sys.executable).with_name("segloop"))


class _Touch:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.path,))


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SEGLOOP, *map(str, args)], capture_output=True, text=True,
                          encoding="utf-8", timeout=600)


def test_pickle_loading_accepts_arrays_and_never_runs_code(tmp_path: Path) -> None:
    good = tmp_path / "1.pkl"
    good.write_bytes(pickle.dumps(np.arange(24, dtype=np.int16).reshape(2, 3, 4)))
    assert load_pickle_array(good).shape == (2, 3, 4)
    marker = tmp_path / "ran"
    evil = tmp_path / "2.pkl"
    evil.write_bytes(pickle.dumps(_Touch(marker)))
    with pytest.raises(InputError, match="not a pickled numpy array"):
        load_pickle_array(evil)
    assert not marker.exists(), "unpickling must not run code"
    for obj, msg in (([1, 2, 3], "not a pickled numpy array|not a numpy array"),
                     (np.zeros((3, 3)), "expected a 3D volume"),
                     (np.array([print], dtype=object).reshape(1, 1, 1), "not a pickled numpy array"),
                     (np.array(["a"], dtype=object).reshape(1, 1, 1), "expected numbers")):
        p = tmp_path / "x.pkl"
        p.write_bytes(pickle.dumps(obj))
        with pytest.raises(InputError, match=msg):
            load_pickle_array(p)


def _dataset(root: Path) -> Path:
    masks = root / "masks"
    masks.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in (1, 2, 3):
        img = rng.normal(0, 1, (20, 20, 12)).astype(np.float32)
        (root / f"scan_{i}.pkl").write_bytes(pickle.dumps(img))
        m = np.zeros((20, 20, 12), np.uint8)
        m[5:12, 6:14, 3:8] = 1
        nib.save(nib.Nifti1Image(m, np.eye(4)), masks / f"{i}.nii")
    return masks


def test_check_rows_reports_every_problem_with_its_row(tmp_path: Path) -> None:
    masks = _dataset(tmp_path)
    (tmp_path / "scan_4.pkl").write_bytes(pickle.dumps({"not": "an array"}))
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.uint8), np.eye(4)), masks / "4.nii")
    (tmp_path / "scan_5.pkl").write_bytes(pickle.dumps(np.zeros((20, 20, 12), np.float32)))
    nib.save(nib.Nifti1Image(np.zeros((9, 9, 9), np.uint8), np.eye(4)), masks / "5.nii")
    (tmp_path / "train.csv").write_text("path,ich,patient_id\nscan_1.pkl,1,a\nmissing_7.pkl,1,b\n"
                                        "scan_4.pkl,1,c\nscan_5.pkl,0,d\n")
    (tmp_path / "val.csv").write_text("path,ich,patient_id\nscan_2.pkl,1,a\nscan_3.pkl,1,e\n")
    train = read_seed_csv(tmp_path / "train.csv", masks)
    val = read_seed_csv(tmp_path / "val.csv", masks)
    problems = check_rows(train, val)
    text = "\n".join(problems)
    assert len(problems) == 4, text
    assert "train.csv row 3 (missing_7.pkl): image file" in text
    assert "train.csv row 4 (scan_4.pkl)" in text and "dict" in text
    assert "train.csv row 5 (scan_5.pkl): mask 5.nii has shape (9, 9, 9)" in text
    assert "patient a is in both train and validation" in text


def test_cli_test_runs_end_to_end_and_bad_csv_fails_cleanly(tmp_path: Path) -> None:
    res = run("train", "--model", "sammed3d", "--test", "--output_dir", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"best_model.pth", "latest_model.pth", "sam_encoder.pth", "config.json"} <= names
    assert any(n.startswith("training_summary_") for n in names)
    import torch

    enc = torch.load(tmp_path / "out" / "sam_encoder.pth", weights_only=True)
    assert "patch_embed.proj.weight" in enc["image_encoder_state_dict"]
    # the run is a model version the engine serves
    res = run("models", "list")
    assert "sammed3d@out" in res.stdout, res.stdout + res.stderr
    vol = tmp_path / "v.nii.gz"
    img = np.random.default_rng(1).normal(0, 1, (24, 24, 10)).astype(np.float32)
    nib.save(nib.Nifti1Image(img, np.diag([1.5, 1.5, 1.5, 1.0])), vol)
    res = run("segment", vol, "--points", 12, 12, 5, 1, "--slice", 5, "-o", tmp_path / "m.nii.gz",
              "--engine", "sammed3d@out", "--quiet")
    assert res.returncode == 0, res.stderr
    assert nib.load(tmp_path / "m.nii.gz").shape == (24, 24, 10)

    masks = _dataset(tmp_path / "d")
    (tmp_path / "d" / "t.csv").write_text("path,ich,patient_id\nscan_1.pkl,1,a\nnope_9.pkl,1,b\n")
    (tmp_path / "d" / "v.csv").write_text("path,ich,patient_id\nscan_2.pkl,1,a\n")
    res = run("train", "--model", "sammed3d", "--train-csv", tmp_path / "d" / "t.csv",
              "--val_csv", tmp_path / "d" / "v.csv", "--mask_dir", masks, "--test")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert "t.csv row 3 (nope_9.pkl)" in res.stderr and "patient a is in both" in res.stderr
