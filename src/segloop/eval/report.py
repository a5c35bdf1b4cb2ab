"""Evaluation reports: CSV, markdown summary, JSON, plots and key-slice overlays.

:func:`write_report` turns an :class:`~segloop.eval.runner.EvalResult` into a report folder:

- ``per_click.csv``: one row per engine, case and click (0 = after the box) with every metric;
- ``summary.md``: per engine the mean Dice / NSD / HD95 / IoU after the box and after N clicks,
  time per case (mean/max) and peak memory; with several engines, the differences from the first
  one; a per-case table; the clicks that lowered a case's Dice (:mod:`segloop.eval.lowering`);
  the failures;
- ``summary.json``: the same numbers, machine-readable;
- ``dice_vs_clicks.png`` (mean Dice and NSD vs clicks per engine), ``per_case_dice.png`` (per-case
  bars per engine), ``overlays/<case>.png`` (the key slice, windowed: truth, predictions, box).

Means of HD95 are taken over the finite values; the number of infinite ones (an empty
prediction) is shown beside them. The figures are drawn by :mod:`segloop.eval.plots` (re-exported
here). Imports numpy and segloop.eval; never torch.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.ism, segloop.train (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from segloop.eval.lowering import LOWER_TOL, LoweringClick, lowering_clicks
from segloop.eval.plots import (
    at_click,
    display_range,
    fmt,
    plot_dice_vs_clicks,
    plot_overlay,
    plot_per_case,
)
from segloop.eval.runner import EvalResult, StepRecord

__all__ = [
    "EngineSummary",
    "ReportPaths",
    "display_range",
    "format_summary_table",
    "plot_dice_vs_clicks",
    "plot_overlay",
    "plot_per_case",
    "summarize",
    "summary_markdown",
    "write_csv",
    "write_report",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSummary:
    """Means over the cases of one engine, after the box (``*_0``) and after N clicks (``*_n``).

    hd95_*: mean of the finite HD95 values (mm), NaN when none; hd95_inf_*: how many were infinite.
    seconds_mean / seconds_max: engine time per case (box + all clicks); box_seconds_*: the box
    step alone (open, segment, propagate). peak_mb: the largest peak extra memory of any step.
    """

    engine: str
    n_cases: int
    clicks: int
    dice_0: float
    dice_n: float
    iou_0: float
    iou_n: float
    nsd_0: float
    nsd_n: float
    hd95_0: float
    hd95_n: float
    hd95_inf_0: int
    hd95_inf_n: int
    seconds_mean: float
    seconds_max: float
    box_seconds_mean: float
    box_seconds_max: float
    peak_mb: float
    gpu_peak_mb: float
    n_errors: int


@dataclass(frozen=True)
class ReportPaths:
    """The files :func:`write_report` wrote."""

    csv: Path
    markdown: Path
    json: Path
    plots: tuple[Path, ...]
    overlays: tuple[Path, ...]


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _finite_mean(values: list[float]) -> tuple[float, int]:
    finite = [v for v in values if math.isfinite(v)]
    return _mean(finite), len(values) - len(finite)


def summarize(result: EvalResult) -> list[EngineSummary]:
    """One :class:`EngineSummary` per engine, in the result's engine order."""
    out = []
    for eng in result.engines:
        first = at_click(result.records, eng, 0)
        last = at_click(result.records, eng, result.clicks)
        hd0, inf0 = _finite_mean([r.hd95 for r in first])
        hdn, infn = _finite_mean([r.hd95 for r in last])
        totals = [r.cum_seconds for r in last]
        box = [r.seconds for r in first]
        peaks = [r.peak_mb for r in result.records if r.engine == eng]
        gpus = [r.gpu_peak_mb for r in result.records if r.engine == eng and math.isfinite(r.gpu_peak_mb)]
        out.append(
            EngineSummary(
                engine=eng,
                n_cases=len(first),
                clicks=result.clicks,
                dice_0=_mean([r.dice for r in first]),
                dice_n=_mean([r.dice for r in last]),
                iou_0=_mean([r.iou for r in first]),
                iou_n=_mean([r.iou for r in last]),
                nsd_0=_mean([r.nsd for r in first]),
                nsd_n=_mean([r.nsd for r in last]),
                hd95_0=hd0,
                hd95_n=hdn,
                hd95_inf_0=inf0,
                hd95_inf_n=infn,
                seconds_mean=_mean(totals),
                seconds_max=max(totals, default=math.nan),
                box_seconds_mean=_mean(box),
                box_seconds_max=max(box, default=math.nan),
                peak_mb=max(peaks, default=math.nan),
                gpu_peak_mb=max(gpus, default=math.nan),
                n_errors=sum(1 for r in first if r.error),
            )
        )
    return out


def _delta(v: float, digits: int = 3) -> str:
    return f"{v:+.{digits}f}" if math.isfinite(v) else "–"


def _hd(v: float, n_inf: int) -> str:
    s = fmt(v, 1)
    return f"{s} ({n_inf} inf)" if n_inf else s


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def format_summary_table(summaries: list[EngineSummary]) -> str:
    """The per-engine markdown table (also what the CLI prints)."""
    if not summaries:
        return "(no results)"
    n = summaries[0].clicks
    header = [
        "engine", "cases", "Dice@0", f"Dice@{n}", "NSD@0", f"NSD@{n}", "HD95@0 mm", f"HD95@{n} mm",
        f"IoU@{n}", "s/case mean", "s/case max", "box s max", "peak MB", "errors",
    ]
    rows = [
        [
            s.engine, str(s.n_cases), fmt(s.dice_0), fmt(s.dice_n), fmt(s.nsd_0), fmt(s.nsd_n),
            _hd(s.hd95_0, s.hd95_inf_0), _hd(s.hd95_n, s.hd95_inf_n), fmt(s.iou_n),
            fmt(s.seconds_mean, 2), fmt(s.seconds_max, 2), fmt(s.box_seconds_max, 2), fmt(s.peak_mb, 0),
            str(s.n_errors),
        ]
        for s in summaries
    ]
    return _table(header, rows)


def _comparison_table(summaries: list[EngineSummary]) -> str:
    base = summaries[0]
    n = base.clicks
    header = ["engine", "ΔDice@0", f"ΔDice@{n}", f"ΔNSD@{n}", f"ΔHD95@{n} mm", f"ΔIoU@{n}", "Δs/case"]
    rows = []
    for s in summaries[1:]:
        rows.append(
            [
                s.engine, _delta(s.dice_0 - base.dice_0), _delta(s.dice_n - base.dice_n),
                _delta(s.nsd_n - base.nsd_n), _delta(s.hd95_n - base.hd95_n, 1),
                _delta(s.iou_n - base.iou_n), _delta(s.seconds_mean - base.seconds_mean, 2),
            ]
        )
    return _table(header, rows)


def _case_table(result: EvalResult) -> str:
    n = result.clicks
    header = ["case", "structure", "modality"]
    for eng in result.engines:
        p = f"{eng} " if len(result.engines) > 1 else ""
        header += [f"{p}Dice@0", f"{p}Dice@{n}", f"{p}NSD@{n}", f"{p}HD95@{n} mm", f"{p}clicks", f"{p}s"]
    rows = []
    for view in result.views:
        row = [view.case_id, view.structure, view.modality]
        for eng in result.engines:
            recs = [r for r in result.records if r.engine == eng and r.case_id == view.case_id]
            r0 = next(r for r in recs if r.click == 0)
            rn = next(r for r in recs if r.click == n)
            placed = sum(1 for r in recs if r.placed and r.click > 0)
            err = " (error)" if r0.error else ""
            row += [fmt(r0.dice) + err, fmt(rn.dice), fmt(rn.nsd), fmt(rn.hd95, 1), str(placed),
                    fmt(rn.cum_seconds, 2)]
        rows.append(row)
    return _table(header, rows)


def _lowering_text(result: EvalResult, lowering: list[LoweringClick]) -> list[str]:
    placed = sum(1 for r in result.records if r.placed and r.click > 0)
    head = f"## Clicks that lowered Dice (by more than {LOWER_TOL:g})"
    if not lowering:
        return [head, "", f"None of the {placed} clicks placed lowered Dice.", ""]
    runs = len({(c.engine, c.case_id) for c in lowering})
    plural = "" if runs == 1 else "s"
    where = f"{runs} case{plural}" if len(result.engines) == 1 else f"{runs} (engine, case) run{plural}"
    rows = [[c.engine, c.case_id, str(c.step), c.sign, str(c.z), fmt(c.before), fmt(c.after),
             f"{c.change:+.3f}"] for c in lowering]
    table = _table(["engine", "case", "click", "sign", "slice", "Dice before", "Dice after",
                    "change"], rows)
    return [head, "", f"{len(lowering)} of the {placed} clicks placed lowered Dice, in {where}:", "",
            table, ""]


def _protocol_text(result: EvalResult) -> str:
    n = result.clicks
    if result.click_protocol == "sammed3d":
        return (f"Protocol: SAM-Med3D's (`--click-protocol sammed3d`, seed 233 per case): one positive "
                f"click at a random target voxel, then {n} clicks each at a random voxel of the error "
                f"region. `@k` = after 1 + k clicks (SAM-Med3D's 'N clicks' is `@N-1`; `box` columns "
                f"mean the first click).")
    return (f"Protocol: one box on the axial slice where the target is largest, propagation, then up "
            f"to {n} simulated corrective clicks (at the most interior voxel of the largest 3D error "
            f"region). `@k` = after k clicks.")


def summary_markdown(result: EvalResult, summaries: list[EngineSummary] | None = None) -> str:
    """The whole ``summary.md`` text."""
    summaries = summaries if summaries is not None else summarize(result)
    parts = [
        "# segloop eval",
        "",
        f"{_protocol_text(result)} NSD at {result.tolerance_mm:g} mm; HD95 in mm, mean over finite "
        f"values (an empty prediction gives inf, counted in brackets). Seconds: engine time per case "
        f"(box + clicks; `box s`: the box step alone). Peak MB: largest peak extra memory of one "
        f"step ({result.memory_method}).",
        "",
        "## Engines",
        "",
        format_summary_table(summaries),
        "",
    ]
    if len(summaries) > 1:
        parts += [f"## Differences from `{summaries[0].engine}`", "", _comparison_table(summaries), ""]
    parts += ["## Cases", "", _case_table(result), ""]
    if result.clicks > 0:
        parts += _lowering_text(result, lowering_clicks(result.records))
    if result.errors:
        parts += ["## Errors", ""] + [f"- {e}" for e in result.errors] + [""]
    parts += [
        "Files: `per_click.csv` (every metric per engine, case and click), `summary.json`, "
        "`dice_vs_clicks.png`, `per_case_dice.png`, `overlays/`.",
        "",
    ]
    return "\n".join(parts)


def write_csv(records: list[StepRecord], path: Path) -> None:
    """Write the records as CSV (one row per engine, case and click; ``inf`` for infinite HD95)."""
    names = [f.name for f in fields(StepRecord)]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=names)
        w.writeheader()
        for r in records:
            w.writerow(r.as_row())


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else "inf"
    return v


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "case"


def write_report(
    result: EvalResult, out_dir: str | Path, *, plots: bool = True, overlays: bool = True
) -> ReportPaths:
    """Write CSV, markdown, JSON, plots and overlays into ``out_dir`` (created if needed)."""
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    summaries = summarize(result)
    csv_path = out / "per_click.csv"
    write_csv(result.records, csv_path)
    md_path = out / "summary.md"
    md_path.write_text(summary_markdown(result, summaries), encoding="utf-8")
    json_path = out / "summary.json"
    payload = {
        "clicks": result.clicks,
        "click_protocol": str(result.click_protocol),
        "tolerance_mm": result.tolerance_mm,
        "memory_method": result.memory_method,
        "engines": [{k: _json_safe(v) for k, v in asdict(s).items()} for s in summaries],
        "lowering_tolerance": LOWER_TOL,
        "lowering_clicks": [asdict(c) for c in lowering_clicks(result.records)],
        "errors": result.errors,
    }
    json_path.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    plot_paths: list[Path] = []
    overlay_paths: list[Path] = []
    if plots and result.records:
        p1, p2 = out / "dice_vs_clicks.png", out / "per_case_dice.png"
        plot_dice_vs_clicks(result, p1)
        plot_per_case(result, p2)
        plot_paths = [p1, p2]
    if overlays and result.views:
        odir = out / "overlays"
        odir.mkdir(exist_ok=True)
        for view in result.views:
            p = odir / f"{_safe_name(view.case_id)}.png"
            plot_overlay(view, p, result)
            overlay_paths.append(p)
    log.info("report written to %s", out)
    return ReportPaths(csv_path, md_path, json_path, tuple(plot_paths), tuple(overlay_paths))
