"""Where the ``classic`` engine's error lies, after the box and after N clicks (a development aid).

Runs the interactive protocol of :mod:`segloop.eval.protocol` on a manifest, like
``bench_classic.py``, and splits each case's wrong voxels into disjoint parts, each printed as
a fraction of the truth's voxel count (so the parts add up to ``(FP + FN) / |truth|``):

- ``runon``: spurious voxels on slices where the truth is empty (propagation past the end);
- ``gone``: missed voxels on slices where the prediction is empty (propagation stopped short);
- ``fp_band`` / ``fn_band``: on slices holding both, spurious voxels in the one-voxel layer
  outside the truth's outline, missed voxels in its outermost layer (4-neighbours in plane):
  an outline one voxel off;
- ``fp_far`` / ``fn_far``: the rest (leaks, holes, missed lobes).

``ratio`` is the predicted voxel count over the truth's. The means of every column over the
cases end the output.

``--truth-key`` starts each case from the truth's own mask on the key slice instead of the
box (the engine learns its model from that mask and propagates it; the clicks follow as in
the protocol): the error that is left when the 2D step on the key slice is perfect, so the
part of the error propagation alone makes. Usage (from the repo root)::

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/error_parts.py MANIFEST.csv \
        [--root DIR] [--only TEXT] [--clicks 5] [--opt NAME=VALUE ...] [--truth-key]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import astuple, dataclass, fields

import numpy as np
from case_args import add_case_args, engine_and_cases
from scipy import ndimage as ndi

from segloop.engines.base import Engine, drive
from segloop.eval.protocol import InteractionRun, box_from_mask, key_slice, run_interaction, simulate_clicks
from segloop.eval.runner import load_truth
from segloop.io import load_volume
from segloop.io.volume import Volume

__all__ = ["ErrorParts", "error_parts", "from_truth_key", "main", "outline_bands"]

_CROSS = ndi.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class ErrorParts:
    """One prediction's error split into disjoint parts, fractions of the truth's voxel count
    (see the module docstring)."""

    ratio: float
    runon: float
    gone: float
    fp_band: float
    fn_band: float
    fp_far: float
    fn_far: float

    def total(self) -> float:
        """All wrong voxels over the truth's count: the sum of the parts."""
        return self.runon + self.gone + self.fp_band + self.fn_band + self.fp_far + self.fn_far


def outline_bands(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The one-voxel layer just outside the ``(X, Y)`` mask ``t``'s outline and ``t``'s own
    outermost layer (4-neighbours in plane)."""
    outer = ndi.binary_dilation(t, _CROSS) & ~t
    rim = t & ~ndi.binary_erosion(t, _CROSS, border_value=1)
    return outer, rim


def error_parts(pred: np.ndarray, truth: np.ndarray) -> ErrorParts:
    """The parts of ``pred``'s error against ``truth`` (``(X, Y, Z)`` bool, truth not empty)."""
    n = int(truth.sum())
    if n == 0:
        raise ValueError("the truth is empty")
    fp, fn = pred & ~truth, truth & ~pred
    tz, pz = truth.any(axis=(0, 1)), pred.any(axis=(0, 1))
    both = tz & pz
    runon = int(fp[:, :, ~tz].sum())
    gone = int(fn[:, :, ~pz].sum())
    fpb = fnb = 0
    for z in np.flatnonzero(both):
        outer, rim = outline_bands(truth[:, :, z])
        fpb += int((fp[:, :, z] & outer).sum())
        fnb += int((fn[:, :, z] & rim).sum())
    fp_both, fn_both = int(fp[:, :, both].sum()), int(fn[:, :, both].sum())
    return ErrorParts(ratio=int(pred.sum()) / n, runon=runon / n, gone=gone / n,
                      fp_band=fpb / n, fn_band=fnb / n,
                      fp_far=(fp_both - fpb) / n, fn_far=(fn_both - fnb) / n)


def from_truth_key(engine: Engine, volume: Volume, truth: np.ndarray, clicks: int) -> list[np.ndarray]:
    """The masks after propagating the truth's key-slice mask and after each of ``clicks``
    simulated clicks (the protocol's clicks, one at a time, stopping when nothing is wrong)."""
    can = volume.canonical()
    z = key_slice(truth)
    session = engine.open(can)
    drive(session.propagate(z, mask2d=truth[:, :, z]))
    run = InteractionRun(key_z=z, box=box_from_mask(truth[:, :, z]), masks=[session.mask().copy()])
    simulate_clicks(session, truth, can.spacing, run, clicks)
    return run.masks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_case_args(ap)
    ap.add_argument("--truth-key", action="store_true",
                    help="start from the truth's key-slice mask instead of the box")
    args = ap.parse_args(argv)
    engine, cases = engine_and_cases(args)
    names = [f.name for f in fields(ErrorParts)]
    print(f"{'case':24s} step " + " ".join(f"{n:>7s}" for n in names) + "   total")
    first = "key" if args.truth_key else "box"
    sums: dict[str, list[ErrorParts]] = {first: [], f"@{args.clicks}": []}
    for case in cases:
        vol = load_volume(case.image)
        truth = load_truth(case.label, vol, case.label_value)
        if args.truth_key:
            masks = from_truth_key(engine, vol, truth, args.clicks)
        else:
            masks = run_interaction(engine, vol, truth, clicks=args.clicks).masks
        for step, mask in zip(sums, (masks[0], masks[-1]), strict=True):
            parts = error_parts(mask, truth)
            sums[step].append(parts)
            print(f"{case.case_id:24s} {step:>4s} " + " ".join(f"{v:7.3f}" for v in astuple(parts))
                  + f" {parts.total():7.3f}", flush=True)
    for step, all_parts in sums.items():
        if all_parts:
            mean = np.mean([astuple(p) for p in all_parts], axis=0)
            tot = float(np.mean([p.total() for p in all_parts]))
            print(f"{'MEAN':24s} {step:>4s} " + " ".join(f"{v:7.3f}" for v in mean) + f" {tot:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
