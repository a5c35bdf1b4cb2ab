"""``segloop bench engine --engine medsam``: MedSAM (SAM ViT-B) encoder and box-decoding speed.

Runs :func:`segloop.engines.medsam.bench.bench_medsam` (random weights, real ViT-B size) once
per requested input size and prints the figures (or JSON lines with ``--json``).
Part of the CLI, the top layer: library code must not import it.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["run_medsam_bench"]

GOAL = "goal: repeated box (SAM's decoder alone) under 50 ms"


def run_medsam_bench(args: argparse.Namespace) -> int:
    """Handler of ``segloop bench engine --engine medsam``."""
    from segloop.engines.medsam.bench import bench_medsam

    sizes = [s for s in args.size if s != 512] or [1024]  # the sam2 default list holds 512
    for s in sizes:
        r = bench_medsam(image_size=s, rgb=args.rgb, device=args.device, threads=args.threads)
        if args.json:
            print(json.dumps(r.as_dict()))
            continue
        print(f"medsam ViT-B {r.image_size} px on a {r.image} image, {r.device}, {r.threads}"
              f" thread(s): preprocessing {r.preprocess_s:.2f} s, encoder {r.encoder_s:.2f} s"
              f" (CPU {r.encoder_cpu_s:.2f} s), first box {r.first_box_s:.2f} s, repeated box:"
              f" decoder {r.decoder_ms:.1f} ms (CPU {r.decoder_cpu_ms:.1f} ms; SamModel's own"
              f" forward alternated with it {r.reference_decoder_ms:.1f} ms, CPU"
              f" {r.reference_decoder_cpu_ms:.1f} ms; max |dlogit| {r.max_abs_logit_diff:.1e}),"
              f" with MedSAM's"
              f" upsampling + threshold {r.repeated_box_ms:.1f} ms, peak memory"
              f" {r.peak_memory_mb:.0f} MB")
    if not args.json:
        print(GOAL)
    return 0
