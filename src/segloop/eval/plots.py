"""Evaluation figures: mean Dice/NSD vs clicks, per-case Dice bars, key-slice overlays (PNG).

Used by :func:`segloop.eval.report.write_report`. matplotlib's object API with the Agg canvas
(no pyplot, no global backend change). Imports numpy, matplotlib (lazily) and
segloop.eval.runner; never torch.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.ism, segloop.train (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from segloop.eval.runner import EvalResult, KeySliceView, StepRecord

__all__ = ["at_click", "display_range", "fmt", "plot_dice_vs_clicks", "plot_overlay",
           "plot_per_case"]

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def at_click(records: list[StepRecord], engine: str, click: int) -> list[StepRecord]:
    """The records of ``engine`` after ``click`` corrective clicks (0 = after the box)."""
    return [r for r in records if r.engine == engine and r.click == click]


def fmt(v: float, digits: int = 3) -> str:
    """A number for a table or title: ``–`` for NaN, ``inf`` for infinity."""
    if math.isnan(v):
        return "–"
    if math.isinf(v):
        return "inf"
    return f"{v:.{digits}f}"


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
        d0 = {r.case_id: r.dice for r in at_click(result.records, eng, 0)}
        dn = {r.case_id: r.dice for r in at_click(result.records, eng, result.clicks)}
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
        ax.set_title(f"{eng}: 3D Dice {fmt(d0)} → {fmt(dn)} @{result.clicks}{failed}", fontsize=9)
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
