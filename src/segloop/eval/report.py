"""Evaluation reports: CSV, markdown summary, JSON, plots and key-slice overlays.

:func:`write_report` turns an :class:`~segloop.eval.runner.EvalResult` into a report folder:

- ``per_click.csv``: one row per engine, case and click (0 = after the box) with every metric;
- ``summary.md``: per engine the mean Dice / NSD / HD95 / IoU after the box and after N clicks,
  time per case (mean/max) and peak memory; with several engines, the differences from the first
  one; a per-case table; the failures;
- ``summary.json``: the same numbers, machine-readable;
- ``dice_vs_clicks.png`` (mean Dice and NSD vs clicks per engine), ``per_case_dice.png`` (per-case
  bars per engine), ``overlays/<case>.png`` (the key slice, windowed: truth, predictions, box).

Means of HD95 are taken over the finite values; the number of infinite ones (an empty
prediction) is shown beside them. Plots use matplotlib's object API with the Agg canvas (no
pyplot, no global backend change). Imports numpy, matplotlib and segloop.eval; never torch.
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
import numpy.typing as npt

from segloop.eval.runner import EvalResult, KeySliceView, StepRecord

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

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


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


def _at(records: list[StepRecord], engine: str, click: int) -> list[StepRecord]:
    return [r for r in records if r.engine == engine and r.click == click]


def summarize(result: EvalResult) -> list[EngineSummary]:
    """One :class:`EngineSummary` per engine, in the result's engine order."""
    out = []
    for eng in result.engines:
        first = _at(result.records, eng, 0)
        last = _at(result.records, eng, result.clicks)
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


def _f(v: float, digits: int = 3) -> str:
    if math.isnan(v):
        return "–"
    if math.isinf(v):
        return "inf"
    return f"{v:.{digits}f}"


def _delta(v: float, digits: int = 3) -> str:
    return f"{v:+.{digits}f}" if math.isfinite(v) else "–"


def _hd(v: float, n_inf: int) -> str:
    s = _f(v, 1)
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
            s.engine, str(s.n_cases), _f(s.dice_0), _f(s.dice_n), _f(s.nsd_0), _f(s.nsd_n),
            _hd(s.hd95_0, s.hd95_inf_0), _hd(s.hd95_n, s.hd95_inf_n), _f(s.iou_n),
            _f(s.seconds_mean, 2), _f(s.seconds_max, 2), _f(s.box_seconds_max, 2), _f(s.peak_mb, 0),
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
            row += [_f(r0.dice) + err, _f(rn.dice), _f(rn.nsd), _f(rn.hd95, 1), str(placed),
                    _f(rn.cum_seconds, 2)]
        rows.append(row)
    return _table(header, rows)


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


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_dice_vs_clicks(result: EvalResult, path: Path) -> None:
    """Mean Dice and NSD vs number of clicks, one line per engine (PNG)."""
    fig = _figure(9, 4)
    axes = fig.subplots(1, 2)
    ks = list(range(result.clicks + 1))
    for i, eng in enumerate(result.engines):
        color = _COLORS[i % len(_COLORS)]
        for ax, metric in zip(axes, ("dice", "nsd"), strict=True):
            per_case: dict[str, list[float]] = {}
            for r in result.records:
                if r.engine == eng:
                    per_case.setdefault(r.case_id, [math.nan] * len(ks))[r.click] = getattr(r, metric)
            arr = np.array(list(per_case.values()), dtype=float)
            for row in arr:
                ax.plot(ks, row, color=color, alpha=0.15, linewidth=0.8)
            ax.plot(ks, np.nanmean(arr, axis=0), color=color, marker="o", linewidth=2, label=eng)
    for ax, title in zip(axes, ("Dice", f"NSD @ {result.tolerance_mm:g} mm"), strict=True):
        ax.set_xlabel("corrective clicks")
        ax.set_ylabel(f"mean {title}")
        ax.set_title(f"{title} vs clicks (thin: cases)")
        ax.set_ylim(0, 1.02)
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)


def plot_per_case(result: EvalResult, path: Path) -> None:
    """Per-case Dice bars, two per engine: light after the box, solid after N clicks (PNG)."""
    cases = [v.case_id for v in result.views]
    n_eng = len(result.engines)
    fig = _figure(max(6.0, 0.5 * len(cases) * max(n_eng, 1) + 2), 4.5)
    ax = fig.subplots()
    width = 0.8 / max(2 * n_eng, 1)
    x = np.arange(len(cases))
    for i, eng in enumerate(result.engines):
        color = _COLORS[i % len(_COLORS)]
        d0 = {r.case_id: r.dice for r in _at(result.records, eng, 0)}
        dn = {r.case_id: r.dice for r in _at(result.records, eng, result.clicks)}
        pos = x - 0.4 + width * (2 * i + 0.5)
        ax.bar(pos, [d0.get(c, math.nan) for c in cases], width * 0.95, color=color, alpha=0.35,
               label=f"{eng} @0 (box only)")
        ax.bar(pos + width, [dn.get(c, math.nan) for c in cases], width * 0.95, color=color,
               label=f"{eng} @{result.clicks} clicks")
    ax.set_xticks(x)
    ax.set_xticklabels(cases, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("Dice")
    ax.set_ylim(0, 1.05)
    ax.set_title("Dice per case")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)


def display_range(image: npt.NDArray[Any], modality: str) -> tuple[float, float]:
    """Grey-level range for display: CT soft-tissue window (W 400, L 40) or 1st-99th percentile."""
    if modality.upper() == "CT":
        return (-160.0, 240.0)
    finite = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
    return (float(lo), float(hi) if hi > lo else float(lo) + 1.0)


def _crop(view: KeySliceView) -> tuple[slice, slice]:
    m = view.truth.copy()
    for masks in view.predictions.values():
        for p in masks:
            m |= p
    x0, y0, x1, y1 = view.box
    m[x0 : x1 + 1, y0 : y1 + 1] = True
    xs, ys = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    nx, ny = m.shape
    mx = max(15, int(0.5 * (xs[-1] - xs[0] + 1)))
    my = max(15, int(0.5 * (ys[-1] - ys[0] + 1)))
    return (slice(max(xs[0] - mx, 0), min(xs[-1] + mx + 1, nx)),
            slice(max(ys[0] - my, 0), min(ys[-1] + my + 1, ny)))


def _contour(ax: Any, mask: npt.NDArray[np.bool_], cx: slice, cy: slice, **kw: Any) -> None:
    m = mask[cx, cy]
    if m.any() and not m.all():
        xx, yy = np.arange(cx.start, cx.stop), np.arange(cy.start, cy.stop)
        ax.contour(xx, yy, m.T.astype(float), levels=[0.5], **kw)


def plot_overlay(view: KeySliceView, path: Path, result: EvalResult) -> None:
    """The key slice of one case, one panel per engine (PNG).

    Image windowed (CT soft tissue, MR percentiles), cropped around the target; truth contour in
    green, prediction after the box dashed yellow, after the last click red, the box in cyan.
    Axes are canonical voxel indices: x to the right, y up.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    cx, cy = _crop(view)
    img = view.image[cx, cy]
    lo, hi = display_range(view.image, view.modality)
    sx, sy = view.spacing_xy
    n = max(len(result.engines), 1)
    fig = _figure(4.2 * n, 4.6)
    axes = np.atleast_1d(fig.subplots(1, n))
    extent = (cx.start - 0.5, cx.stop - 0.5, cy.start - 0.5, cy.stop - 0.5)
    for ax, eng in zip(axes, result.engines, strict=True):
        ax.imshow(img.T, cmap="gray", vmin=lo, vmax=hi, origin="lower", extent=extent,
                  aspect=sy / sx, interpolation="nearest")
        _contour(ax, view.truth, cx, cy, colors="#00e000", linewidths=1.8)
        preds = view.predictions.get(eng)
        if preds:
            _contour(ax, preds[0], cx, cy, colors="yellow", linewidths=1.2, linestyles="dashed")
            _contour(ax, preds[-1], cx, cy, colors="red", linewidths=1.4)
        x0, y0, x1, y1 = view.box
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False,
                               edgecolor="cyan", linewidth=1.0))
        recs = [r for r in result.records if r.engine == eng and r.case_id == view.case_id]
        d0 = next((r.dice for r in recs if r.click == 0), math.nan)
        dn = next((r.dice for r in recs if r.click == result.clicks), math.nan)
        failed = " (engine error)" if any(r.error for r in recs) else ""
        ax.set_title(f"{eng}: 3D Dice {_f(d0)} → {_f(dn)} @{result.clicks}{failed}", fontsize=9)
        ax.set_xlabel("x (voxel)")
        ax.set_ylabel("y (voxel)")
    handles = [
        Line2D([], [], color="#00e000", label="truth"),
        Line2D([], [], color="yellow", linestyle="dashed", label="after box"),
        Line2D([], [], color="red", label=f"after {result.clicks} clicks"),
        Line2D([], [], color="cyan", label="box"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(f"{view.case_id} ({view.structure}, {view.modality}) — slice z={view.key_z}", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path)


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
