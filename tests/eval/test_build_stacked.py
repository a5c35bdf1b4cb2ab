"""The stacked-targets dev manifest (``benchmarks/build_stacked.py``): it must not reuse a
held-out or shared case's target (same label file, same value), and the derived MR disc is
one whole disc inside the volume."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


@pytest.fixture(scope="module")
def mod() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCH))
    try:
        import build_stacked
        yield build_stacked
    finally:
        sys.path.remove(str(BENCH))


def _used(manifest: Path) -> set[tuple[str, str]]:
    with manifest.open() as f:
        return {(Path(r["label"]).name, r["label_value"]) for r in csv.DictReader(f)}


def test_no_held_out_or_shared_target_is_reused(mod: ModuleType) -> None:
    used = _used(ROOT / "benchmarks" / "heldout_cases.csv")
    shared = ROOT.parent / "shared" / "data" / "cases.csv"
    for extra in (shared, Path("/work/shared/data/cases.csv")):
        if extra.is_file():
            used |= _used(extra)
    mine = {(Path(c[2]).name, c[3]) for c in mod.CASES}
    assert not mine & used
    # the full-length example CT is the held-out L1 / L2's patient: those levels stay out
    spine = {c[3] for c in mod.CASES if c[2].endswith("example_ct_spine.nii.gz")}
    assert not spine & {"30", "31"}
    assert len({c[0] for c in mod.CASES}) == len(mod.CASES)
    assert {c[6] for c in mod.CASES} == {"stacked", "control"}


def test_one_disc_is_the_largest_component_inside_the_volume(mod: ModuleType) -> None:
    discs = np.zeros((6, 6, 12), dtype=bool)
    discs[1:5, 1:5, 0:3] = True  # the largest, but cut by the volume's first slice
    discs[1:4, 1:4, 5:7] = True  # inside: the one
    discs[2:3, 2:3, 9:10] = True  # inside, smaller
    got = mod.one_disc(discs)
    assert got.sum() == 18 and got[:, :, 5:7].all(axis=2).sum() == 9
