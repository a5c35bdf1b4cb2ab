"""Loading one case of ``benchmarks/heldout_cases.csv`` from ``../shared/data`` for the
classic engine's tests (the held-out structures validate general changes only)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from segloop.engines.base import Session
from segloop.eval.protocol import box_from_mask, key_slice, next_click
from segloop.io.volume import Volume
from segloop.types import Click, Prompts

HELDOUT = Path(__file__).resolve().parents[3] / "benchmarks" / "heldout_cases.csv"


def heldout_case(shared_data: Path, case_id: str) -> tuple[Volume, np.ndarray]:
    """The case's volume and its target on the volume's canonical grid (bool)."""
    from segloop.io import load_label, load_volume

    with HELDOUT.open() as f:
        row = next(r for r in csv.DictReader(f) if r["case_id"] == case_id)
    vol = load_volume(shared_data / row["image"])
    return vol, load_label(shared_data / row["label"], vol, row["label_value"])


def boxed_then_click(session: Session, truth: np.ndarray,
                     spacing: tuple[float, float, float]) -> Click:
    """Prompt ``session`` as the benchmark does (the truth's box on its key slice, then the
    propagation) and return the protocol's first corrective click, not yet given."""
    z = key_slice(truth)
    session.segment_slice(z, Prompts(box=box_from_mask(truth[:, :, z])))
    list(session.propagate(z))
    click = next_click(session.mask(), truth, spacing)
    assert click is not None
    return click
