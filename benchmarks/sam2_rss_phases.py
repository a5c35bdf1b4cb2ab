"""Peak RSS of ``segloop bench engine`` per phase: which step of a propagation sets the peak.

Runs :func:`segloop.engines.sam2.bench.bench_engine` (hiera-tiny at 512 px, random weights, a
512x512x300 CT-like volume, a correction over ``--track`` slices) while a thread samples the
process's RSS every 5 ms (psutil), tagged with the part of the model running (forward hooks on
the same modules as the bench's per-part timers), ``track-other`` between them, and
``largest_cc`` for the end-of-propagation 3D component step. Prints the peak per phase (MB),
then the bench's own peak and per-slice figures. Usage::

    PYTHONPATH=src python benchmarks/sam2_rss_phases.py --track 24
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psutil

import segloop.engines.sam2.bench as bench
from segloop.engines.sam2.session import Sam2Session

__all__: list[str] = []


def main() -> None:
    """Run the bench with the sampler and print the peak RSS per phase."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--track", type=int, default=24)
    ap.add_argument("--slices", type=int, default=299)
    ap.add_argument("--xy", type=int, default=512)
    args = ap.parse_args()
    proc = psutil.Process()
    phase = ["setup"]
    peak: dict[str, float] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss = proc.memory_info().rss / 2**20
            peak[phase[0]] = max(peak.get(phase[0], 0.0), rss)
            time.sleep(0.005)

    timed = bench._timed_parts

    @contextmanager
    def tagged(model: Any, dev: Any) -> Iterator[Any]:
        handles = []
        for part, attr in bench.PARTS.items():
            mod = getattr(model, attr)

            def pre(_m: Any, _a: Any, part: str = part) -> None:
                phase[0] = part

            def post(_m: Any, _a: Any, _o: Any) -> None:
                phase[0] = "track-other"

            handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
        phase[0] = "track-other"
        try:
            with timed(model, dev) as out:
                yield out
        finally:
            for h in handles:
                h.remove()
            phase[0] = "after"

    keep = Sam2Session._keep_largest_component

    def keep_tagged(self: Sam2Session, object_id: int, touched: list[int]) -> list[int]:
        phase[0] = "largest_cc"
        try:
            return keep(self, object_id, touched)
        finally:
            phase[0] = "track-other"

    bench._timed_parts = tagged  # type: ignore[assignment]
    Sam2Session._keep_largest_component = keep_tagged  # type: ignore[method-assign]
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        res = bench.bench_engine(xy=args.xy, slices=args.slices, track=args.track,
                                 image_size=512)
    finally:
        done.set()
        sampler.join()
        bench._timed_parts = timed
        Sam2Session._keep_largest_component = keep  # type: ignore[method-assign]
    print("peak RSS per phase (MB):", json.dumps({k: round(v) for k, v in peak.items()}))
    print(f"bench: peak {res.peak_memory_mb:.0f} MB (after the model {res.rss_model_mb:.0f},"
          f" after opening {res.rss_open_mb:.0f}); per tracked slice"
          f" {res.tracked_slice_s:.2f} s wall, {res.tracked_slice_cpu_s:.2f} s CPU")


if __name__ == "__main__":
    main()
