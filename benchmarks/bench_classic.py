"""Benchmark of the ``classic`` engine on a manifest: 3D Dice after the box and after N clicks.

Runs the interactive protocol of :mod:`segloop.eval.protocol` (one box on the slice where the
target is largest, propagation, then up to N simulated corrective clicks) and prints, per case,
the Dice after 0 and N clicks and the engine's seconds (box + propagation + all clicks), then
the means. The engine's seconds are wall-clock time; its CPU seconds (process time spent in
the engine's calls, click simulation excluded) say more on a shared, loaded machine. Last, it
lists every click that lowered a case's Dice by more than ``--lower-tol`` (issue 17 asks for
these): the case, the click's number and sign, its slice, and the Dice before and after it.
Usage (from the repo root)::

    .venv/bin/python benchmarks/bench_classic.py [../shared/data/cases.csv] [--clicks 5] \
        [--root DIR] [--only TEXT] [--opt NAME=VALUE ...] [--lower-tol 0.002]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from segloop.datastore.manifest import read_manifest
from segloop.engines import get_engine
from segloop.eval.lowering import LOWER_TOL, LoweringClick, falls
from segloop.eval.protocol import InteractionRun, run_interaction
from segloop.eval.runner import load_truth
from segloop.io import load_volume

__all__ = ["CpuTimed", "dice", "lowering_in_run", "main"]

REPO = Path(__file__).resolve().parents[1]


class CpuTimed:
    """An engine whose sessions add up the CPU seconds (process time) spent in the engine's
    own calls (segment, propagate, refine), click simulation excluded."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.cpu = 0.0

    def open(self, volume: Any) -> Any:
        return _Session(self, self.engine.open(volume))


class _Session:
    def __init__(self, owner: CpuTimed, session: Any) -> None:
        self._owner, self._s = owner, session

    def __getattr__(self, name: str) -> Any:
        inner = getattr(self._s, name)
        if name not in ("segment_slice", "propagate", "refine"):
            return inner

        def timed(*args: Any, **kwargs: Any) -> Any:
            c0 = time.process_time()
            out = inner(*args, **kwargs)
            if name != "segment_slice":
                out = iter(list(out))  # run the generator here, inside the timing
            self._owner.cpu += time.process_time() - c0
            return out

        return timed


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two bool arrays (1.0 when both are empty)."""
    s = int(pred.sum()) + int(truth.sum())
    return 2.0 * int((pred & truth).sum()) / s if s else 1.0


def lowering_in_run(engine: str, case_id: str, run: InteractionRun, dices: list[float],
                    tol: float) -> list[LoweringClick]:
    """The clicks of ``run`` after which Dice (``dices[i]``: after step i) fell by more than
    ``tol`` (:func:`segloop.eval.lowering.falls`; the masks are after the initial prompt, then
    after each further click)."""
    clicks = run.clicks[run.initial_clicks:]
    return [LoweringClick(engine, case_id, i, clicks[i - 1].label, clicks[i - 1].z,
                          dices[i - 1], dices[i]) for i in falls(dices, tol)]


def _line(c: LoweringClick) -> str:
    return (f"  {c.case_id:20s} click {c.step} ({c.sign}, slice {c.z}): "
            f"{c.before:.3f} -> {c.after:.3f} ({c.change:+.3f})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest", nargs="?", default=str(REPO / ".." / "shared" / "data" / "cases.csv"))
    ap.add_argument("--root", default=None, help="folder the manifest's paths are relative to")
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--engine", default="classic")
    ap.add_argument("--only", default="", help="run only cases whose id contains this text")
    ap.add_argument("--opt", action="append", default=[], metavar="NAME=VALUE",
                    help="an engine option (repeatable), e.g. --opt area_cap=1.5")
    ap.add_argument("--lower-tol", type=float, default=LOWER_TOL,
                    help="list the clicks that lowered Dice by more than this")
    args = ap.parse_args(argv)
    engine = get_engine(args.engine, **dict(o.split("=", 1) for o in args.opt))
    cases = [c for c in read_manifest(args.manifest, args.root) if args.only in c.case_id]
    d0s, dns, secs, cpus = [], [], [], []
    lowering: list[LoweringClick] = []
    print(f"{'case':20s} {'dice@0':>7s} {'dice@' + str(args.clicks):>7s} {'seconds':>8s}")
    for case in cases:
        vol = load_volume(case.image)
        truth = load_truth(case.label, vol, case.label_value)
        timed = CpuTimed(engine)
        t0 = time.perf_counter()
        run = run_interaction(timed, vol, truth, clicks=args.clicks)  # type: ignore[arg-type]
        wall, cpu = time.perf_counter() - t0, timed.cpu
        d = [dice(m, truth) for m in run.masks]
        engine_s = float(sum(run.seconds))
        lowering += lowering_in_run(args.engine, case.case_id, run, d, args.lower_tol)
        d0s.append(d[0])
        dns.append(d[-1])
        secs.append(engine_s)
        cpus.append(cpu)
        print(f"{case.case_id:20s} {d[0]:7.3f} {d[-1]:7.3f} {engine_s:8.2f}   (wall {wall:.1f} s with"
              f" click simulation, CPU"
              f" {cpu:.2f} s in the engine; per click:"
              f" {' '.join(f'{x:.3f}' for x in d[1:])})", flush=True)
    print(f"{'MEAN':20s} {np.mean(d0s):7.3f} {np.mean(dns):7.3f} {np.max(secs):8.2f} (max; CPU max"
          f" {np.max(cpus):.2f} s, median {np.median(cpus):.2f} s, engine only)")
    print(f"clicks lowering Dice by more than {args.lower_tol}: {len(lowering)} in "
          f"{len({c.case_id for c in lowering})} of {len(cases)} cases")
    for c in lowering:
        print(_line(c))
    return 0


if __name__ == "__main__":
    sys.exit(main())
