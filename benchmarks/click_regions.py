"""What each simulated click fixes of the 3D error region it lands in (a development aid, issue 17).

Runs the interactive protocol of :mod:`segloop.eval.protocol` on a manifest (one box on the
slice where the target is largest, propagation, then up to N corrective clicks, each at the
most interior voxel of the largest 3D error region) and, for every click, takes the click's
**region**: the 3D connected component (26-neighbours) of the error of the click's sign that
holds the click (missed voxels for a positive click, spurious ones for a negative click). It
prints, per click:

- ``region``: the region's voxel count over the truth's; ``zspan``: the slices it spans;
- ``on_slice``: the share of the region on the click's own slice;
- ``thick``: the share of the region outside the truth's one-voxel outline layers (in plane:
  the layer just outside the truth's outline and the truth's outermost layer), that is, leaks
  and missed parts rather than an outline one voxel off;
- ``fixed`` / ``fixed_slice`` / ``fixed_thick``: the share of the region (of its part on the
  click's slice; of its part outside the outline layers) that the engine's refinement got right;
- ``new``: voxels the refinement made wrong that were right before, over the truth's count.

Per case it prints the Dice after the box and after each click, and at the end the mean Dice
and, per click sign, the means of the columns above.

``--oracle region`` (or ``thick``) is a what-if: after each of the engine's refinements, the
click's region (or only its part outside the outline layers) is set to the truth on the slices
within ``--reach`` of the click's slice, in the classic session's own state, so the following
clicks start from it. It bounds what a refinement acting on the whole region in 3D could add.
``--oracle no-harm`` instead puts back, after each refinement, the voxels it made wrong that
were right before: what the refinements' side effects cost. ``--oracle-sign positive`` (or
``negative``) lets the oracle act only after clicks of that sign.
Usage (from the repo root)::

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/click_regions.py MANIFEST.csv \
        [--root DIR] [--only TEXT] [--clicks 5] [--opt NAME=VALUE ...] \
        [--oracle none|region|thick|no-harm] [--reach SLICES] [--oracle-sign both|positive|negative]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np
from case_args import add_case_args, engine_and_cases
from error_parts import outline_bands
from scipy import ndimage as ndi

from segloop.engines.base import Session
from segloop.eval.metrics import compute_dice
from segloop.eval.protocol import AfterRefine, run_interaction
from segloop.eval.runner import load_truth
from segloop.io import load_volume
from segloop.types import Click

__all__ = ["ClickRecord", "clicked_region", "main", "outline_layers"]

_CUBE = np.ones((3, 3, 3), dtype=bool)
ORACLES = ("none", "region", "thick", "no-harm")


@dataclass(frozen=True)
class ClickRecord:
    """One click's region and what the engine's refinement did to it (module docstring)."""

    label: int
    region: float
    zspan: int
    on_slice: float
    thick: float
    fixed: float
    fixed_slice: float
    fixed_thick: float
    new: float


def clicked_region(pred: np.ndarray, truth: np.ndarray, click: Click) -> np.ndarray:
    """The 3D connected component (26-neighbours) of the click's error holding the click:
    missed voxels for a positive click, spurious ones for a negative click. ``(X, Y, Z)`` bool;
    raises ValueError when the click's voxel is not an error of its sign."""
    err = (truth & ~pred) if click.label == 1 else (pred & ~truth)
    if not err[click.x, click.y, click.z]:
        raise ValueError(f"the click at {(click.x, click.y, click.z)} is not in an error of its sign")
    lab, _ = ndi.label(err, structure=_CUBE)
    return np.asarray(lab == lab[click.x, click.y, click.z])


def outline_layers(truth: np.ndarray) -> np.ndarray:
    """Per slice, the one-voxel layer just outside the truth's outline and the truth's
    outermost layer (4-neighbours in plane): ``error_parts.outline_bands`` on each slice."""
    out = np.zeros_like(truth, dtype=bool)
    for z in np.flatnonzero(truth.any(axis=(0, 1))):
        outer, rim = outline_bands(truth[:, :, z])
        out[:, :, z] = outer | rim
    return out


def _record(before: np.ndarray, after: np.ndarray, truth: np.ndarray, region: np.ndarray,
            layers: np.ndarray, click: Click) -> ClickRecord:
    n = int(region.sum())
    zs = np.flatnonzero(region.any(axis=(0, 1)))
    on = region[:, :, click.z]
    right = after == truth
    thick = region & ~layers
    return ClickRecord(
        label=click.label, region=n / int(truth.sum()), zspan=int(zs[-1] - zs[0] + 1),
        on_slice=int(on.sum()) / n, thick=int(thick.sum()) / n,
        fixed=int((region & right).sum()) / n,
        fixed_slice=int((on & right[:, :, click.z]).sum()) / max(1, int(on.sum())),
        fixed_thick=int((thick & right).sum()) / max(1, int(thick.sum())),
        new=int((~right & (before == truth)).sum()) / int(truth.sum()))


def _oracle_fix(session: Session, truth: np.ndarray, region: np.ndarray, click: Click,
                reach: int) -> None:
    """Set ``region`` to the truth on the slices within ``reach`` of the click's slice, in the
    classic session's state (so the next refinement starts from it)."""
    state = getattr(session, "_state", None)
    if state is None:
        raise SystemExit("--oracle needs the classic engine (it edits the session's own state)")
    part = region.copy()
    part[:, :, :max(0, click.z - reach)] = False
    part[:, :, click.z + reach + 1:] = False
    state.get(1).mask[part] = truth[part]


def _observer(truth: np.ndarray, layers: np.ndarray, records: list[ClickRecord], oracle: str,
              signs: tuple[int, ...], reach: int) -> AfterRefine:
    """What runs after each refinement: record and print what it did to the click's region,
    then apply the oracle (after clicks of ``signs``)."""

    def after_refine(session: Session, click: Click, before: np.ndarray) -> None:
        region = clicked_region(before, truth, click)
        after = session.mask()
        rec = _record(before, after, truth, region, layers, click)
        records.append(rec)
        print(f"  click {rec.label} region {rec.region:.3f} zspan {rec.zspan} on_slice "
              f"{rec.on_slice:.2f} thick {rec.thick:.2f} fixed {rec.fixed:.3f} fixed_slice "
              f"{rec.fixed_slice:.2f} fixed_thick {rec.fixed_thick:.2f} new {rec.new:.4f}")
        if oracle != "none" and click.label in signs:
            part = {"region": region, "thick": region & ~layers,
                    "no-harm": (after != truth) & (before == truth)}[oracle]
            _oracle_fix(session, truth, part, click, reach)

    return after_refine


def _weighted(records: list[ClickRecord]) -> float:
    """The thick voxels fixed over all the thick voxels of these clicks' regions."""
    thick = np.array([r.region * r.thick for r in records])
    fixed = np.array([r.region * r.thick * r.fixed_thick for r in records])
    return float(fixed.sum() / thick.sum()) if thick.sum() else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_case_args(ap)
    ap.add_argument("--oracle", choices=ORACLES, default="none",
                    help="after each refinement, set the click's region (or its part outside "
                         "the outline layers; or the voxels the refinement made wrong) to the "
                         "truth")
    ap.add_argument("--reach", type=int, default=10_000,
                    help="the oracle acts on the slices within this many of the click's")
    ap.add_argument("--oracle-sign", choices=("both", "positive", "negative"), default="both",
                    help="the oracle acts only after clicks of this sign")
    args = ap.parse_args(argv)
    signs = {"both": (0, 1), "positive": (1,), "negative": (0,)}[args.oracle_sign]
    engine, cases = engine_and_cases(args)
    records: list[ClickRecord] = []
    firsts: list[float] = []
    lasts: list[float] = []
    print(f"{'case':24s} dice@0 dice@{args.clicks}  per click")
    for case in cases:
        vol = load_volume(case.image)
        truth = load_truth(case.label, vol, case.label_value)
        observe = _observer(truth, outline_layers(truth), records, args.oracle, signs, args.reach)
        run = run_interaction(engine, vol, truth, args.clicks, after_refine=observe)
        dices = [compute_dice(m, truth) for m in run.masks]
        firsts.append(dices[0])
        lasts.append(dices[-1])
        print(f"{case.case_id:24s} {dices[0]:6.3f} {dices[-1]:6.3f}  "
              + " ".join(f"{d:.3f}" for d in dices[1:]), flush=True)
    print(f"{'MEAN':24s} {np.mean(firsts):6.4f} {np.mean(lasts):6.4f}  ({len(lasts)} cases, "
          f"oracle {args.oracle})")
    for label, name in ((1, "positive"), (0, "negative")):
        rs = [r for r in records if r.label == label]
        if rs:
            print(f"{name} clicks {len(rs)}: region {np.mean([r.region for r in rs]):.3f} zspan "
                  f"median {np.median([r.zspan for r in rs]):.0f} on_slice "
                  f"{np.mean([r.on_slice for r in rs]):.2f} thick {np.mean([r.thick for r in rs]):.2f}"
                  f" fixed {np.mean([r.fixed for r in rs]):.3f} (median "
                  f"{np.median([r.fixed for r in rs]):.3f}) fixed_slice "
                  f"{np.mean([r.fixed_slice for r in rs]):.2f} fixed_thick "
                  f"{np.mean([r.fixed_thick for r in rs]):.2f} (of the thick voxels "
                  f"{_weighted(rs):.2f}) new {np.mean([r.new for r in rs]):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
