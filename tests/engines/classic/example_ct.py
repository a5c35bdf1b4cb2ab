"""The TotalSegmentator example CT of ``../shared/data`` with one of its labels, prompted the
way the benchmark prompts it (a box on the slice where the target is largest), for the
classic engine's end-rule tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segloop.eval.protocol import box_from_mask, key_slice
from segloop.io.volume import Volume
from segloop.types import Prompts


def example_ct(shared_data: Path, label: str) -> tuple[Volume, np.ndarray, int, Prompts]:
    """The canonical volume, the label's target (bool, on that grid), its key slice and the
    box there."""
    from segloop.io import load_label, load_volume

    vol = load_volume(shared_data / "totalseg" / "example_ct_sm.nii.gz")
    truth = np.asarray(load_label(shared_data / "totalseg" / "example_seg.nii.gz", vol, label),
                       dtype=bool)
    z = key_slice(truth)
    return vol.canonical(), truth, z, Prompts(box=box_from_mask(truth[:, :, z]))
