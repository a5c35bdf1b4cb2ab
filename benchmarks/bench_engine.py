"""Benchmark the SAM 2 engine: seconds per tracked slice, 2D prompt latency, peak memory.

Random weights at the real model size (speed does not depend on the values). Each size runs
in its own process so peak memory is per size. Usage::

    python benchmarks/bench_engine.py                      # hiera-tiny, 512 and 1024, 2 threads
    python benchmarks/bench_engine.py --size 512 --precision bf16
    python benchmarks/bench_engine.py --device cuda --threads 0

Equivalent to ``segloop bench engine ...``. Reference figures (2 CPU threads, hiera-tiny):
512 px 0.71 s per tracked slice fp32, ~0.40 s bf16, 13 ms decode; 1024 px 5.05 s.
"""

from __future__ import annotations

import sys

from segloop.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main(["bench", "engine", *sys.argv[1:]]))
