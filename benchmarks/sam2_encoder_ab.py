"""A/B of the SAM 2 image encoder with and without the position-encoding memo, alternated.

hiera-tiny at 512 px, random weights, one slice per call. The two variants alternate in one
process (A B A B ...), so a loaded machine slows both alike; prints the median wall and CPU
ms of each and checks that the features are bit-identical. Usage::

    PYTHONPATH=src python benchmarks/sam2_encoder_ab.py --rounds 5 --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from segloop.engines.sam2.runtime import memoise_position_encodings
from segloop.models.configs import build_config
from segloop.models.loader import build_model

__all__: list[str] = []


def main() -> None:
    """Run the alternation and print one line per variant."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(build_config("tiny", args.size))
    pe = model.vision_encoder.neck.position_encoding
    plain = pe.forward
    memoise_position_encodings(model)
    memo = pe.forward
    x = torch.randn(1, 3, args.size, args.size)
    times: dict[str, list[tuple[float, float]]] = {"without memo": [], "with memo": []}
    outs = {}
    with torch.inference_mode():
        model.get_image_features(x)  # warm-up (and fills the memo)
        for _ in range(args.rounds):
            for name, fwd in (("without memo", plain), ("with memo", memo)):
                pe.forward = fwd
                t0, c0 = time.perf_counter(), time.process_time()
                out = model.get_image_features(x, return_dict=True)
                times[name].append((time.perf_counter() - t0, time.process_time() - c0))
                outs[name] = out.fpn_hidden_states
    same = all(torch.equal(a, b) for a, b in zip(outs["without memo"], outs["with memo"],
                                                   strict=True))
    print(f"load average {os.getloadavg()[0]:.1f}, {args.threads} thread(s), {args.size} px,"
          f" {args.rounds} rounds, features identical: {same}")
    for name, rows in times.items():
        wall = statistics.median(r[0] for r in rows) * 1000
        cpu = statistics.median(r[1] for r in rows) * 1000
        print(f"  image encoder {name}: median {wall:.0f} ms wall, {cpu:.0f} ms CPU")


if __name__ == "__main__":
    main()
