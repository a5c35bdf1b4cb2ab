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

__all__ = [
    "AUTO_WINDOW",
    "CT_PRESETS",
    "PERCENTILE_WINDOWS",
    "CtPreset",
    "WindowSpec",
    "check_window",
    "normalize",
    "scale_mr",
    "window_bounds",
    "window_ct",
    "window_level_width",
]


class CtPreset(StrEnum):
    """Named CT windows (values in :data:`CT_PRESETS`)."""

    SOFT_TISSUE = "soft_tissue"
    ABDOMEN = "abdomen"
    LIVER = "liver"
    MEDIASTINUM = "mediastinum"
    LUNG = "lung"
    BONE = "bone"
    BRAIN = "brain"


#: preset -> (level, width) in HU: the one window table of segloop (every engine, the CLI, the
#: API, training). Where MedSAM2's own code names a window, its values are used: soft tissue /
#: abdomen 40/400 (MedSAM's ``pre_CT_MR.py`` and MedSAM2's Slicer plugin "Abdominal CT"), lung
#: -600/1500, brain 40/80, mediastinum 50/350 (the Slicer plugin's presets). MedSAM2 has no liver
#: or bone preset: those are the usual radiology values (Radiopaedia: liver 30/150, bone 400/1800).
CT_PRESETS: dict[CtPreset, tuple[float, float]] = {
    CtPreset.SOFT_TISSUE: (40.0, 400.0),
    CtPreset.ABDOMEN: (40.0, 400.0),
    CtPreset.LIVER: (30.0, 150.0),
    CtPreset.MEDIASTINUM: (50.0, 350.0),
    CtPreset.LUNG: (-600.0, 1500.0),
    CtPreset.BONE: (400.0, 1800.0),
    CtPreset.BRAIN: (40.0, 80.0),
}

#: window values meaning "no fixed window": ``auto`` (CT preset by modality, else percentiles)
#: and the percentile-scaling spellings
AUTO_WINDOW = "auto"
PERCENTILE_WINDOWS: tuple[str, ...] = ("percentile", "mr", "none")

WindowSpec = str | CtPreset | tuple[float, float]


def _preset_key(window: str | CtPreset) -> CtPreset | None:
    key = str(window).strip().lower().replace("-", "_").replace(" ", "_")
    if key == "soft":
        key = CtPreset.SOFT_TISSUE.value
    try:
        return CtPreset(key)
    except ValueError:
        return None


def _unknown(window: object) -> InputError:
    names = ", ".join(p.value for p in CtPreset)
    return InputError(f"unknown window preset {window!r}: use one of {names}, 'L,W' (level and "
                      f"width in HU, e.g. 40,400), {AUTO_WINDOW} or percentile")


def window_level_width(window: str | CtPreset | tuple[float, float]) -> tuple[float, float]:
    """``(level, width)`` in HU of a preset name, ``"L,W"`` text or a ``(level, width)`` pair.

    InputError (one line, listing the presets) for anything else or a width <= 0."""
    if isinstance(window, tuple | list):
        level, width = float(window[0]), float(window[1])
    else:
        preset = _preset_key(window)
        if preset is not None:
            level, width = CT_PRESETS[preset]
        else:
            try:
                level, width = (float(v) for v in str(window).split(","))
            except ValueError:
                raise _unknown(window) from None
    if not width > 0:
        raise InputError(f"CT window {window!r}: the width must be positive, got {width}")
    return level, width


def check_window(window: str | CtPreset | None) -> str | None:
    """Validate a window option (CLI ``--window``, engine option, training config): a preset,
    ``"L,W"``, ``auto`` or a percentile spelling; returns it normalised (preset value, ``auto``,
    ``percentile`` or the ``L,W`` text). None stays None. InputError otherwise."""
    if window is None:
        return None
    text = str(window).strip().lower()
    if text == AUTO_WINDOW:
        return AUTO_WINDOW
    if text in PERCENTILE_WINDOWS:
        return "percentile"
    preset = _preset_key(text)
    if preset is not None:
        return preset.value
    level, width = window_level_width(text)
    return f"{level:g},{width:g}"


def window_bounds(window: WindowSpec | None) -> tuple[float, float] | None:
    """``(lower, upper)`` HU of a CT window, None for percentile scaling (None or a percentile
    spelling). A tuple is taken as explicit ``(lower, upper)`` bounds; a preset or ``"L,W"``
    text as level/width. InputError on anything else or an empty window."""
    if window is None or str(window).strip().lower() in PERCENTILE_WINDOWS:
        return None
    if isinstance(window, tuple | list):
        lo, hi = float(window[0]), float(window[1])
        if not hi > lo:
            raise InputError(f"window {window!r} is empty: the upper bound must exceed the lower")
        return lo, hi
    level, width = window_level_width(window)
    return level - width / 2.0, level + width / 2.0


def window_ct(
    data: npt.NDArray[Any], window: str | CtPreset | tuple[float, float] = CtPreset.SOFT_TISSUE
) -> npt.NDArray[np.float32]:
    """Map HU to [0, 1]: ``(x - (level - width/2)) / width`` clipped.

    window: a preset name or a ``(level, width)`` pair in HU (width > 0).
    """
    level, width = window_level_width(window)
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

    window: a CT preset name or ``"L,W"``; None picks soft tissue for CT and percentile scaling
    for anything else. ``"auto"`` / ``"percentile"`` force percentile scaling.
    """
    if window is not None and str(window).lower() in (AUTO_WINDOW, *PERCENTILE_WINDOWS):
        return scale_mr(volume.data)
    if window is not None:
        return window_ct(volume.data, window)
    if (volume.modality or "").upper() == "CT":
        return window_ct(volume.data, CtPreset.SOFT_TISSUE)
    return scale_mr(volume.data)
