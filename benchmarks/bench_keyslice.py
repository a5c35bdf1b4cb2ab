"""Key-slice benchmark of the ``classic`` engine: the 2D Dice of the box result on its slice.

The protocol's first step alone (the truth's box on the slice where the target is largest,
``segment_slice`` with that box), with no propagation: what propagation starts from. Several
option sets can be compared in one run (each case's volume is loaded once and the variants
run one after another on it). Prints, per case, the key-slice Dice of each variant and its CPU
seconds, then the means. Usage (from the repo root)::

    .venv/bin/python benchmarks/bench_keyslice.py MANIFEST.csv [--root DIR] [--only TEXT] \
        [--variant NAME:OPT=VALUE,OPT=VALUE ...]

Without ``--variant`` the engine's defaults run alone (as the variant ``default``).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from segloop.datastore.manifest import read_manifest
from segloop.engines import get_engine
from segloop.eval.protocol import box_from_mask, key_slice
from segloop.eval.runner import load_truth
from segloop.io import load_volume
from segloop.types import Prompts

__all__ = ["main"]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / s if s else 1.0


def _variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, rest = text.partition(":")
    opts = dict(o.split("=", 1) for o in rest.split(",") if o)
    return name, opts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest")
    ap.add_argument("--root", default=None, help="folder the manifest's paths are relative to")
    ap.add_argument("--only", default="", help="run only cases whose id contains this text")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:OPT=VALUE,...",
                    help="an option set to compare (repeatable); 'default:' is the defaults")
    args = ap.parse_args(argv)
    variants = [_variant(v) for v in (args.variant or ["default:"])]
    engines = [(name, get_engine("classic", **opts)) for name, opts in variants]
    cases = [c for c in read_manifest(args.manifest, args.root) if args.only in c.case_id]
    scores: dict[str, list[float]] = {name: [] for name, _ in engines}
    cpus: dict[str, list[float]] = {name: [] for name, _ in engines}
    print(f"{'case':24s} " + " ".join(f"{name:>10s}" for name, _ in engines))
    for case in cases:
        vol = load_volume(case.image).canonical()
        truth = load_truth(case.label, vol, case.label_value)
        z = key_slice(truth)
        box = box_from_mask(truth[:, :, z])
        cells = []
        for name, engine in engines:
            c0 = time.process_time()
            m = engine.open(vol).segment_slice(z, Prompts(box=box))
            cpu = time.process_time() - c0
            d = _dice(np.asarray(m, dtype=bool), truth[:, :, z])
            scores[name].append(d)
            cpus[name].append(cpu)
            cells.append(f"{d:10.3f}")
        print(f"{case.case_id:24s} " + " ".join(cells) + "   (CPU "
              + " ".join(f"{cpus[n][-1]:.2f}" for n, _ in engines) + " s)", flush=True)
    print(f"{'MEAN':24s} " + " ".join(f"{np.mean(scores[n]):10.3f}" for n, _ in engines))
    print(f"{'below 0.5':24s} " + " ".join(f"{sum(s < 0.5 for s in scores[n]):10d}" for n, _ in engines))
    print(f"{'CPU max s':24s} " + " ".join(f"{np.max(cpus[n]):10.2f}" for n, _ in engines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
