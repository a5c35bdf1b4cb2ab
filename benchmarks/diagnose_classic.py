"""Per-slice diagnosis of the ``classic`` engine on manifest cases (a development aid).

For each selected case: the Dice of the key slice after the box, the 3D Dice after each
simulated click, and per slice the truth area, predicted area and slice Dice after the box,
so one can see whether a failure comes from the key slice or from propagation. Usage (from
the repo root)::

    .venv/bin/python benchmarks/diagnose_classic.py MANIFEST.csv [--root DIR] [--only TEXT]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from segloop.datastore.manifest import read_manifest
from segloop.engines import get_engine
from segloop.eval.protocol import run_interaction
from segloop.eval.runner import load_truth
from segloop.io import load_volume

__all__ = ["main"]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / s if s else 1.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest")
    ap.add_argument("--root", default=None)
    ap.add_argument("--only", default="")
    ap.add_argument("--clicks", type=int, default=5)
    args = ap.parse_args(argv)
    engine = get_engine("classic")
    cases = [c for c in read_manifest(args.manifest, args.root) if args.only in c.case_id]
    for case in cases:
        vol = load_volume(case.image)
        truth = load_truth(case.label, vol, case.label_value)
        run = run_interaction(engine, vol, truth, clicks=args.clicks)
        m0 = run.masks[0]
        z = run.key_z
        print(f"== {case.case_id}  key z={z} box={run.box}  key-slice Dice"
              f" {_dice(m0[:, :, z], truth[:, :, z]):.3f}")
        print("   3D Dice per click: " + " ".join(f"{_dice(m, truth):.3f}" for m in run.masks)
              + "   clicks: " + " ".join(f"({c.x},{c.y},{c.z},{'+' if c.label else '-'})"
                                       for c in run.clicks))
        zs = np.flatnonzero(truth.any(axis=(0, 1)) | m0.any(axis=(0, 1)))
        for s in zs:
            t, p = truth[:, :, s], m0[:, :, s]
            print(f"   z={s:3d} truth {int(t.sum()):6d} pred {int(p.sum()):6d} dice {_dice(p, t):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
