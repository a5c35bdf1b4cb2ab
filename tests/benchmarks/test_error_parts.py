"""``benchmarks/error_parts.py``: each kind of error lands in its own part, the parts add up to
all wrong voxels, and the script runs the protocol on a written NIfTI case (issue 17)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .scripts import load_script, write_case


def test_each_error_in_its_part() -> None:
    ep = load_script("error_parts")
    truth = np.zeros((40, 40, 8), dtype=bool)
    truth[10:20, 10:20, 2:6] = True  # 100 voxels on each of slices 2..5
    pred = truth.copy()
    pred[9, 10:20, 2] = True  # 10 voxels just outside the outline on slice 2
    pred[10:20, 10, 3] = False  # the outline's outermost column on slice 3: 10 voxels
    pred[30:33, 30:33, 3] = True  # a 9-voxel leak far from the truth
    pred[14:16, 14:16, 4] = False  # a 4-voxel hole inside
    pred[:, :, 5] = False  # slice 5 lost: 100 voxels
    pred[10:20, 10:20, 6] = True  # a run-on slice: 100 voxels
    parts = ep.error_parts(pred, truth)
    n = 400
    assert parts.fp_band == pytest.approx(10 / n)
    assert parts.fn_band == pytest.approx(10 / n)
    assert parts.fp_far == pytest.approx(9 / n)
    assert parts.fn_far == pytest.approx(4 / n)
    assert parts.gone == pytest.approx(100 / n)
    assert parts.runon == pytest.approx(100 / n)
    wrong = int((pred ^ truth).sum())
    assert parts.total() == pytest.approx(wrong / n)
    assert parts.ratio == pytest.approx(int(pred.sum()) / n)


def test_empty_truth_is_an_error() -> None:
    ep = load_script("error_parts")
    empty = np.zeros((4, 4, 2), dtype=bool)
    with pytest.raises(ValueError, match="empty"):
        ep.error_parts(empty, empty)


def test_script_on_a_written_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ep = load_script("error_parts")
    rng = np.random.default_rng(0)
    xx, yy, zz = np.mgrid[:48, :48, :12]
    truth = ((xx - 24) ** 2 + (yy - 24) ** 2 <= 100) & (zz >= 3) & (zz <= 8)
    img = np.where(truth, 200.0, 50.0) + rng.normal(0, 5, truth.shape)
    write_case(tmp_path, img, truth, "disc")
    assert ep.main([str(tmp_path / "cases.csv"), "--clicks", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out[1:]] == [["disc", "box"], ["disc", "@2"],
                                                      ["MEAN", "box"], ["MEAN", "@2"]]
    total_box = float(out[1].split()[-1])
    assert 0.0 <= total_box < 0.5  # a bright disc on a dark ground: mostly right from a box


def test_truth_key_starts_from_the_truths_key_slice(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """``--truth-key``: the truth's own key-slice mask is propagated (the key slice is then
    right by construction) and the clicks follow; the rows are labelled ``key``."""
    from segloop.engines import get_engine
    from segloop.eval.protocol import key_slice
    from segloop.io import load_label, load_volume

    ep = load_script("error_parts")
    rng = np.random.default_rng(1)
    xx, yy, zz = np.mgrid[:48, :48, :12]
    # a cone: the disc shrinks along z, so the propagated slices differ from the key slice
    truth = ((xx - 24) ** 2 + (yy - 24) ** 2 <= (12 - zz) ** 2) & (zz >= 2) & (zz <= 9)
    img = np.where(truth, 200.0, 50.0) + rng.normal(0, 20, truth.shape)
    manifest = write_case(tmp_path, img, truth, "cone")
    vol = load_volume(tmp_path / "img.nii.gz")
    lab = load_label(tmp_path / "lab.nii.gz", vol, 1)
    masks = ep.from_truth_key(get_engine("classic"), vol, lab, 2)
    z = key_slice(lab)
    assert 1 <= len(masks) <= 3
    assert np.array_equal(masks[0][:, :, z], lab[:, :, z])
    assert z == 2  # the cone's base
    assert masks[0][:, :, z + 1:z + 5].any(axis=(0, 1)).all()  # propagated from it
    assert ep.main([str(manifest), "--clicks", "1", "--truth-key"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out[1:]] == [["cone", "key"], ["cone", "@1"],
                                                      ["MEAN", "key"], ["MEAN", "@1"]]
