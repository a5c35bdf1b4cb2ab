"""What a prompt on a coronal or sagittal slice costs beside one on an axial slice.

For one engine (default ``classic``) on a real CT, through :class:`segloop.jobs.planesessions.
PlaneSessions` as the worker runs it: open a plane's session (axial: the canonical volume;
coronal / sagittal: a transposed copy first), segment a box on the slice of that plane with the
most target, propagate. Then the cost of switching planes in one job: after the coronal
propagation, an axial initial mask of the same object (the axial session is opened and the
coronal mask copied in with ``set_mask``). Plane order alternates per round (A/B/C, C/B/A ...)
so load drift hits all alike; wall and process CPU time are printed, medians over rounds, with
the load average. Bytes held by the job's sessions (segloop.jobs.sizing) are printed too.

    PYTHONPATH=src python benchmarks/bench_planes.py [--engine classic] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from segloop.engines import get_engine
from segloop.engines.base import drive
from segloop.io import load_volume
from segloop.jobs.planesessions import PlaneSessions, view_volume
from segloop.jobs.sizing import estimate_bytes
from segloop.types import Plane, Prompts

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def _box(plane: Plane, lab: np.ndarray) -> tuple[int, list[int]]:
    view = plane.to_view(lab)
    k = int(np.argmax(view.sum(axis=(0, 1))))
    us, vs = np.nonzero(view[:, :, k])
    return k, [int(us.min()), int(vs.min()), int(us.max()), int(vs.max())]


def _timed(fn: Any) -> tuple[float, float, Any]:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default="classic")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--image", default=str(DATA / "totalseg/example_ct_sm.nii.gz"))
    ap.add_argument("--label", default=str(DATA / "totalseg/example_seg.nii.gz"))
    ap.add_argument("--value", type=int, default=5, help="label value of the target (liver)")
    a = ap.parse_args()
    vol = load_volume(a.image).canonical()
    lv = load_volume(a.label)
    lab = np.asarray(lv.source_to_canonical(np.asarray(lv.data) == a.value))
    engine = get_engine(a.engine)
    planes = [Plane.AXIAL, Plane.CORONAL, Plane.SAGITTAL]
    rows: dict[str, list[tuple[float, float]]] = {}
    held: dict[str, int] = {}
    for r in range(a.rounds):
        for plane in planes if r % 2 == 0 else planes[::-1]:
            k, box = _box(plane, lab)
            job = PlaneSessions(lambda p: engine.open(view_volume(vol, p)), vol.shape)
            w, c, view = _timed(lambda p=plane, j=job: j.view(p))
            rows.setdefault(f"{plane.value}: open", []).append((w, c))
            w, c, _ = _timed(lambda v=view, k=k, b=box: v.segment_slice(k, Prompts.make(b), 1))
            job.changed(plane, [1])
            rows.setdefault(f"{plane.value}: segment", []).append((w, c))
            w, c, _ = _timed(lambda v=view, k=k: drive(v.propagate(k, None, 1), None, None))
            job.changed(plane, [1])
            rows.setdefault(f"{plane.value}: propagate", []).append((w, c))
            if plane is not Plane.AXIAL:  # then an axial step of the same object
                z, zbox = _box(Plane.AXIAL, lab)

                def switch(j: PlaneSessions = job, z: int = z, b: list[int] = zbox) -> None:
                    j.view(Plane.AXIAL).segment_slice(z, Prompts.make(b), 1)
                    j.changed(Plane.AXIAL, [1])
                w, c, _ = _timed(switch)
                rows.setdefault(f"{plane.value} -> axial step", []).append((w, c))
            held[plane.value] = estimate_bytes(job)
    print(f"engine {a.engine}, volume {vol.shape}, {a.rounds} rounds, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'step':<28}{'wall s (median)':>16}{'cpu s (median)':>16}")
    for name, vals in rows.items():
        print(f"{name:<28}{statistics.median(v[0] for v in vals):>16.3f}"
              f"{statistics.median(v[1] for v in vals):>16.3f}")
    for name, n in held.items():
        print(f"sessions held after the {name} run (+ axial step): {n / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
