"""Intensity windowing: CT presets (Hounsfield level/width) and MR percentile scaling.

Every function returns float32 in [0, 1] with the input's shape. Pure numpy; must not
import torch or any engine.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from segloop.errors import InputError
from segloop.io.volume import Volume

__all__ = ["CT_PRESETS", "CtPreset", "normalize", "scale_mr", "window_ct"]


class CtPreset(StrEnum):
    """Named CT windows (values in :data:`CT_PRESETS`)."""

    SOFT_TISSUE = "soft_tissue"
    LIVER = "liver"
    LUNG = "lung"
    BONE = "bone"
    BRAIN = "brain"


#: preset -> (level, width) in HU (common radiology values)
CT_PRESETS: dict[CtPreset, tuple[float, float]] = {
    CtPreset.SOFT_TISSUE: (40.0, 400.0),
    CtPreset.LIVER: (30.0, 150.0),
    CtPreset.LUNG: (-600.0, 1500.0),
    CtPreset.BONE: (400.0, 1800.0),
    CtPreset.BRAIN: (40.0, 80.0),
}


def _preset(window: str | CtPreset) -> tuple[float, float]:
    key = str(window).strip().lower().replace("-", "_").replace(" ", "_")
    if key in ("soft", "abdomen", "mediastinum"):
        key = "soft_tissue"
    try:
        return CT_PRESETS[CtPreset(key)]
    except ValueError:
        names = ", ".join(p.value for p in CtPreset)
        raise InputError(f"unknown CT window {window!r}; choose one of {names}") from None


def window_ct(
    data: npt.NDArray[Any], window: str | CtPreset | tuple[float, float] = CtPreset.SOFT_TISSUE
) -> npt.NDArray[np.float32]:
    """Map HU to [0, 1]: ``(x - (level - width/2)) / width`` clipped.

    window: a preset name or a ``(level, width)`` pair in HU (width > 0).
    """
    if isinstance(window, tuple):
        level, width = float(window[0]), float(window[1])
    else:
        level, width = _preset(window)
    if width <= 0:
        raise InputError(f"window width must be positive, got {width}")
    lo = level - width / 2.0
    out = (np.asarray(data, dtype=np.float32) - np.float32(lo)) / np.float32(width)
    return np.asarray(np.clip(out, 0.0, 1.0), dtype=np.float32)


def scale_mr(data: npt.NDArray[Any], lo_pct: float = 0.5, hi_pct: float = 99.5) -> npt.NDArray[np.float32]:
    """Map the ``lo_pct``..``hi_pct`` percentile range of the values to [0, 1], clipped.

    A constant image maps to zeros.
    """
    if not 0.0 <= lo_pct < hi_pct <= 100.0:
        raise InputError(f"need 0 <= lo_pct < hi_pct <= 100, got {lo_pct}, {hi_pct}")
    arr = np.asarray(data, dtype=np.float32)
    if arr.size == 0:
        return arr
    flat = arr.reshape(-1)
    sample = flat[:: max(1, flat.size // 2_000_000)]
    lo, hi = (float(v) for v in np.percentile(sample, [lo_pct, hi_pct]))
    if hi <= lo:
        return np.zeros_like(arr)
    return np.asarray(np.clip((arr - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0), dtype=np.float32)


def normalize(volume: Volume, window: str | CtPreset | None = None) -> npt.NDArray[np.float32]:
    """The volume's voxels (source order) scaled to float32 [0, 1].

    window: a CT preset name; None picks soft tissue for CT and percentile scaling for
    anything else. ``"auto"`` / ``"percentile"`` force percentile scaling.
    """
    if window is not None and str(window).lower() in ("auto", "percentile", "mr"):
        return scale_mr(volume.data)
    if window is not None:
        return window_ct(volume.data, window)
    if (volume.modality or "").upper() == "CT":
        return window_ct(volume.data, CtPreset.SOFT_TISSUE)
    return scale_mr(volume.data)
