"""The runner and the report on a synthetic manifest written to tmp_path, with real engines."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from matplotlib.image import imread

from segloop.datastore.manifest import read_manifest
from segloop.errors import InputError, SegloopError
from segloop.eval.report import summarize, write_report
from segloop.eval.runner import EvalProgress, evaluate, load_truth, resolve_engines
from segloop.io import load_volume


def test_truth_is_aligned_in_physical_space(synthetic_manifest: Path) -> None:
    root = synthetic_manifest.parent
    vol = load_volume(root / "ct.nii.gz")
    truth = load_truth(root / "ct_label.nii.gz", vol, 3)
    stored = np.asarray(nib.load(root / "ct_label.nii.gz").dataobj)
    expected = stored[:, ::-1, :] == 3  # the label file is stored y-flipped
    assert truth.shape == vol.canonical().shape
    assert np.array_equal(truth, expected)
    assert not np.array_equal(truth, stored == 3)  # raw indices would be wrong
    with pytest.raises(InputError, match="has no voxel of value 9 inside the image"):
        load_truth(root / "ct_label.nii.gz", vol, 9)


def test_evaluate_two_engines_and_write_report(
    synthetic_manifest: Path, eval_engines: dict[str, str], tmp_path: Path
) -> None:
    cases = read_manifest(synthetic_manifest)
    engines = resolve_engines([eval_engines["threshold"], eval_engines["failing"]])
    events: list[EvalProgress] = []
    result = evaluate(cases, engines, clicks=2, on_progress=events.append)

    assert result.engines == [eval_engines["threshold"], eval_engines["failing"]]
    assert len(result.records) == 2 * 2 * 3
    done = [e.done for e in events]
    assert done == sorted(done) and done[-1] == events[-1].total == 12

    good = [r for r in result.records if r.engine == eval_engines["threshold"]]
    for r in good:
        assert not r.error
        assert r.dice > 0.85 and r.nsd > 0.8 and math.isfinite(r.hd95), r
        assert r.seconds >= 0 and r.peak_mb >= 0
    first = [r for r in good if r.click == 0]
    assert {r.case_id for r in first} == {"ct_blob", "mr_blob"}
    assert all(r.click_label == -1 for r in first)
    placed_clicks = [r for r in good if r.click > 0 and r.placed]
    assert all(r.click_label in (0, 1) and r.click_z >= 0 for r in placed_clicks)

    bad = [r for r in result.records if r.engine == eval_engines["failing"]]
    assert all("cannot refine" in r.error and r.dice == 0.0 and math.isinf(r.hd95) for r in bad)
    assert len(result.errors) == 2

    out = tmp_path / "report"
    paths = write_report(result, out)
    rows = list(csv.DictReader(paths.csv.open()))
    assert len(rows) == 12 and rows[0]["engine"] == eval_engines["threshold"]
    assert {"dice", "nsd", "hd95", "seconds", "peak_mb", "click"} <= set(rows[0])
    md = paths.markdown.read_text(encoding="utf-8")
    assert f"| {eval_engines['threshold']} | 2 |" in md
    assert f"Differences from `{eval_engines['threshold']}`" in md
    assert "| ct_blob | blob | CT |" in md and "## Errors" in md
    data = json.loads(paths.json.read_text(encoding="utf-8"))
    assert data["engines"][1]["hd95_n"] is None and data["engines"][1]["hd95_inf_n"] == 2
    assert data["engines"][0]["dice_n"] == pytest.approx(summarize(result)[0].dice_n)
    assert len(paths.plots) == 2 and len(paths.overlays) == 2
    for png in (*paths.plots, *paths.overlays):
        img = imread(png)
        assert img.shape[0] > 200 and img.shape[1] > 200


def test_clicks_improve_a_poor_start(synthetic_manifest: Path, eval_engines: dict[str, str]) -> None:
    """Clicks are placed and scored: with 3 clicks Dice never gets worse on these clean blobs."""
    cases = read_manifest(synthetic_manifest)
    result = evaluate(cases, resolve_engines([eval_engines["threshold"]]), clicks=3)
    for cid in ("ct_blob", "mr_blob"):
        dice = [r.dice for r in result.records if r.case_id == cid]
        assert len(dice) == 4 and dice[-1] >= dice[0] - 0.02


def test_bad_inputs(synthetic_manifest: Path, eval_engines: dict[str, str]) -> None:
    cases = read_manifest(synthetic_manifest)
    engines = resolve_engines([eval_engines["threshold"]])
    with pytest.raises(InputError, match="clicks"):
        evaluate(cases, engines, clicks=-1)
    with pytest.raises(SegloopError, match="unknown engine"):
        resolve_engines(["no-such-engine"])
    with pytest.raises(SegloopError, match="no trained model 'classic@run1'"):
        resolve_engines(["classic@run1"])
    wrong = synthetic_manifest.parent / "wrong.csv"
    wrong.write_text(
        "case_id,image,label,label_value,structure,modality\nx,ct.nii.gz,ct_label.nii.gz,4,none,CT\n"
    )
    with pytest.raises(InputError, match=r"case x: label .* has no voxel of value 4"):
        evaluate(read_manifest(wrong), engines, clicks=0)
