"""``segloop.eval.lowering``: the clicks after which a case's Dice fell, per engine and case,
and their section in ``summary.md`` / ``summary.json`` (issue 17: report the cases where a
click lowers Dice)."""

from __future__ import annotations

import json
from pathlib import Path

from segloop.eval.lowering import LoweringClick, falls, lowering_clicks
from segloop.eval.report import summary_markdown, write_report
from segloop.eval.runner import EvalResult, StepRecord


def _rec(engine: str, case_id: str, click: int, dice: float, *, placed: bool = True,
         label: int = 1, z: int = 4) -> StepRecord:
    return StepRecord(
        engine=engine, case_id=case_id, structure="s", modality="CT", patient_id="",
        click=click, placed=placed, click_x=1, click_y=2, click_z=z if click else -1,
        click_label=label if click else -1, dice=dice, iou=dice, nsd=dice, hd95=1.0,
        seconds=0.1, cum_seconds=0.1 * (click + 1), peak_mb=1.0, gpu_peak_mb=float("nan"),
        truth_voxels=100, pred_voxels=100, key_z=5, box="0,0,4,4")


def test_falls_are_the_steps_below_their_predecessor_beyond_the_tolerance() -> None:
    assert falls([0.7, 0.75, 0.70, 0.699, 0.65]) == [2, 4]  # -0.001 is within 0.002
    assert falls([0.7, 0.75, 0.70], tol=0.1) == []
    assert falls([0.5]) == [] and falls([]) == []


def test_lowering_clicks_per_engine_and_case() -> None:
    records = [
        _rec("classic", "a", 0, 0.80), _rec("classic", "a", 2, 0.70, label=0, z=7),
        _rec("classic", "a", 1, 0.85),  # out of order: sorted by click
        _rec("classic", "b", 0, 0.90), _rec("classic", "b", 1, 0.95),
        _rec("classic", "b", 2, 0.95, placed=False),  # the protocol had stopped
        _rec("other", "a", 0, 0.60), _rec("other", "a", 1, 0.59, z=3),
    ]
    low = lowering_clicks(records)
    assert low == [LoweringClick("classic", "a", 2, 0, 7, 0.85, 0.70),
                   LoweringClick("other", "a", 1, 1, 3, 0.60, 0.59)]
    assert low[0].sign == "-" and abs(low[0].change + 0.15) < 1e-9
    assert lowering_clicks(records, tol=0.05) == low[:1]
    # an unplaced step with a lower score (an engine that failed) is no click
    assert lowering_clicks([_rec("x", "c", 0, 0.5), _rec("x", "c", 1, 0.0, placed=False)]) == []


def test_the_report_lists_them(tmp_path: Path) -> None:
    result = EvalResult(engines=["classic"], clicks=2, tolerance_mm=2.0, memory_method="VmHWM")
    result.records = [_rec("classic", "a", 0, 0.80), _rec("classic", "a", 1, 0.85),
                      _rec("classic", "a", 2, 0.70, label=0, z=7)]
    md = summary_markdown(result)
    assert "## Clicks that lowered Dice (by more than 0.002)" in md
    assert "1 of the 2 clicks placed lowered Dice, in 1 case:" in md
    assert "| classic | a | 2 | - | 7 | 0.850 | 0.700 | -0.150 |" in md
    paths = write_report(result, tmp_path / "r", plots=False, overlays=False)
    data = json.loads(paths.json.read_text(encoding="utf-8"))
    assert data["lowering_tolerance"] == 0.002
    assert data["lowering_clicks"] == [{"engine": "classic", "case_id": "a", "step": 2, "label": 0,
                                        "z": 7, "before": 0.85, "after": 0.7}]
    result.records[2] = _rec("classic", "a", 2, 0.86)
    assert "None of the 2 clicks placed lowered Dice." in summary_markdown(result)
    box_only = EvalResult(engines=["classic"], clicks=0, tolerance_mm=2.0, memory_method="VmHWM",
                          records=[_rec("classic", "a", 0, 0.80)])
    assert "Clicks that lowered" not in summary_markdown(box_only)  # no click was asked for
