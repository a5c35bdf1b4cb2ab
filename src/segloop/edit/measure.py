"""Per-object measurements of a label map: voxel count, volume (mL) and extent.

Extent is the bounding box in voxels (first and last index per axis of the canonical RAS
grid) and its size in mm. Must not import jobs, api, engines, torch or the web UI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .regions import Labels

__all__ = ["ObjectMeasure", "measure", "measures_csv"]


@dataclass(frozen=True)
class ObjectMeasure:
    """One label value's measurements (``bbox_min``/``bbox_max`` inclusive voxel indices)."""

    label_value: int
    voxels: int
    volume_ml: float
    bbox_min: tuple[int, int, int] | None
    bbox_max: tuple[int, int, int] | None
    extent_mm: tuple[float, float, float] | None
    slices: int  # axial slices holding the object


def measure(labels: Labels, spacing: Sequence[float], label_values: Sequence[int] = ()
            ) -> list[ObjectMeasure]:
    """Measurements of every label value in ``labels`` and of each of ``label_values``
    (absent ones count 0 voxels), by label value."""
    if labels.ndim != 3 or len(spacing) != 3:
        raise ValueError(f"a 3D label map and 3 spacings, got {labels.shape} and {spacing}")
    voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
    counts = np.bincount(labels.ravel(), minlength=256)
    wanted = sorted({int(v) for v in np.flatnonzero(counts[1:]) + 1} | set(label_values))
    out: list[ObjectMeasure] = []
    for v in wanted:
        n = int(counts[v]) if 0 < v < 256 else 0
        if n == 0:
            out.append(ObjectMeasure(v, 0, 0.0, None, None, None, 0))
            continue
        m = labels == v
        lo, hi = [], []
        for ax in range(3):
            other = tuple(a for a in range(3) if a != ax)
            idx = np.flatnonzero(m.any(axis=other))
            lo.append(int(idx[0]))
            hi.append(int(idx[-1]))
        ext = tuple(float((h - lo_ + 1) * s) for lo_, h, s in zip(lo, hi, spacing, strict=True))
        slices = int(m.any(axis=(0, 1)).sum())
        out.append(ObjectMeasure(v, n, round(n * voxel_ml, 4), (lo[0], lo[1], lo[2]),
                                 (hi[0], hi[1], hi[2]), (ext[0], ext[1], ext[2]), slices))
    return out


def measures_csv(rows: Sequence[ObjectMeasure], names: dict[int, str]) -> str:
    """The measurements as CSV, one object a row (``names``: label value -> object name)."""
    head = ("label_value,name,voxels,volume_ml,slices,x_min,y_min,z_min,x_max,y_max,z_max,"
            "extent_x_mm,extent_y_mm,extent_z_mm")
    lines = [head]
    for r in rows:
        name = names.get(r.label_value, "").replace('"', '""')
        box = [*(r.bbox_min or ("",) * 3), *(r.bbox_max or ("",) * 3)]
        ext = [f"{e:.2f}" for e in r.extent_mm] if r.extent_mm else ["", "", ""]
        lines.append(",".join([str(r.label_value), f'"{name}"', str(r.voxels),
                               f"{r.volume_ml:.4f}", str(r.slices),
                               *[str(b) for b in box], *ext]))
    return "\n".join(lines) + "\n"
