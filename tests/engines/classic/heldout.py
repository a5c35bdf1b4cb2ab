"""Loading one case of ``benchmarks/heldout_cases.csv`` from ``../shared/data`` for the
classic engine's tests (the held-out structures validate general changes only)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from segloop.io.volume import Volume

HELDOUT = Path(__file__).resolve().parents[3] / "benchmarks" / "heldout_cases.csv"


def heldout_case(shared_data: Path, case_id: str) -> tuple[Volume, np.ndarray]:
    """The case's volume and its target on the volume's canonical grid (bool)."""
    from segloop.io import load_label, load_volume

    with HELDOUT.open() as f:
        row = next(r for r in csv.DictReader(f) if r["case_id"] == case_id)
    vol = load_volume(shared_data / row["image"])
    return vol, load_label(shared_data / row["label"], vol, row["label_value"])
