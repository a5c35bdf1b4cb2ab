"""Page faults and CPU time of the image encoder with the engine's 4 MiB mmap bound vs the
opt-in warm heap (:mod:`segloop.engines.sam2.heap`), alternated in one process.

hiera-tiny at 512 px, random weights, one random input; per call: wall, user and sys CPU
seconds and minor page faults (``getrusage``), the two policies in turn (A B B A ...), and
whether the features are bit-identical. Usage::

    PYTHONPATH=src python benchmarks/sam2_page_faults.py --rounds 4 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import time

import torch

from segloop.engines.sam2.heap import warm_heap
from segloop.engines.sam2.runtime import bound_heap_growth
from segloop.models.configs import build_config
from segloop.models.loader import build_model

__all__: list[str] = []


def main() -> None:
    """Alternate the two allocation policies and print the medians."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bound_heap_growth()
    torch.manual_seed(0)
    model = build_model(build_config("tiny", 512))
    x = torch.randn(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    rows: dict[str, list[tuple[float, float, float, int]]] = {"bound": [], "warm": []}
    feats: dict[str, torch.Tensor] = {}
    loads = [os.getloadavg()[0]]
    with torch.inference_mode():
        for rnd in range(args.rounds):
            for mode in ("bound", "warm") if rnd % 2 == 0 else ("warm", "bound"):
                ctx = warm_heap() if mode == "warm" else contextlib.nullcontext()
                with ctx:
                    model.get_image_features(x)  # the policy's first call fills its heap
                    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
                    out = model.get_image_features(x, return_dict=True)
                    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
                rows[mode].append((t1 - t0, r1.ru_utime - r0.ru_utime,
                                   r1.ru_stime - r0.ru_stime, r1.ru_minflt - r0.ru_minflt))
                feats.setdefault(mode, out.fpn_hidden_states[-1].clone())
                loads.append(os.getloadavg()[0])
    print(f"image encoder, hiera-tiny 512 px, {args.threads} thread(s), {args.rounds} rounds"
          f" (A B B A ...), load average {min(loads):.2f}-{max(loads):.2f}; medians per call")
    for mode, r in rows.items():
        print(f"  {mode:6s} wall {statistics.median(v[0] for v in r):.3f} s,"
              f" user {statistics.median(v[1] for v in r):.3f} s,"
              f" sys {statistics.median(v[2] for v in r):.3f} s,"
              f" minor faults {statistics.median(v[3] for v in r):.0f}")
    print(f"  features identical: {torch.equal(feats['bound'], feats['warm'])}")


if __name__ == "__main__":
    main()
