"""``segloop bench engine``: seconds per tracked slice, 2D prompt latency and peak memory.

Runs :func:`segloop.engines.sam2.bench.bench_engine` (random weights, real model sizes) once
per requested input size, each in a fresh process so peak memory is per size.
Part of the CLI, the top layer: library code must not import it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from segloop.errors import SegloopError

__all__ = ["register"]

REFERENCE = ("reference (2 CPU threads, hiera-tiny): 512 px 0.71 s/tracked slice fp32,"
             " ~0.40 s bf16, 13 ms decode; 1024 px 5.05 s/tracked slice")


def register(sub: Any) -> None:
    """Add the ``bench`` subcommand."""
    p: argparse.ArgumentParser = sub.add_parser("bench", help="benchmarks (engine speed)")
    act = p.add_subparsers(dest="bench_command", metavar="WHAT")
    e = act.add_parser("engine", help="SAM 2 engine speed with random weights")
    e.add_argument("--engine", default="sam2", choices=["sam2", "medsam"],
                   help="engine family: sam2 (Hiera, tracking) or medsam (SAM ViT-B, 2D boxes)")
    e.add_argument("--rgb", action="store_true", help="medsam: an RGB test image (default grey)")
    e.add_argument("--hiera", default="tiny", choices=["tiny", "small", "base-plus", "large"])
    e.add_argument("--size", type=int, nargs="+", default=[512, 1024], help="input size(s), px")
    e.add_argument("--slices", type=int, default=8,
                   help="slices to track (the volume has one more: the prompted middle slice)")
    e.add_argument("--xy", type=int, default=256,
                   help="the volume's in-plane size in voxels (--xy 512 --slices 299: a"
                        " 512x512x300 CT)")
    e.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    e.add_argument("--device", default="cpu")
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--encode-batch", type=int, default=None,
                   help="slices encoded per encoder call ahead of tracking (default: 16 on a"
                        " GPU, 1 on a CPU; 1 = one at a time)")
    e.add_argument("--track", type=int, default=None,
                   help="propagate over only N slices around the middle, the others holding a"
                        " stored mask (a correction in a long volume; peak memory as a full run)")
    e.add_argument("--post", default="auto", choices=["auto", "device", "host"],
                   help="mask post-processing: torch on the device (default on a GPU) or"
                        " scipy on the host (default on a CPU)")
    e.add_argument("--sync-free", default="auto", choices=["auto", "on", "off"],
                   help="no host sync per tracked slice (default: on for a GPU, off on a CPU)")
    e.add_argument("--compile", action="store_true",
                   help="torch.compile the tracking step (CUDA graphs on a GPU); an untimed"
                        " propagation compiles it first")
    e.add_argument("--json", action="store_true", help="one JSON object per line")
    e.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    e.set_defaults(func=_engine)

    def _help(_args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=_help)


_POST: dict[str, bool | None] = {"auto": None, "device": True, "host": False}
_SWITCH: dict[str, bool | None] = {"auto": None, "on": True, "off": False}


def _engine(args: argparse.Namespace) -> int:
    from segloop.extras import require_modules

    require_modules("torch", "transformers", command="bench engine")
    if args.engine == "medsam":
        from segloop.cli.bench_medsam import run_medsam_bench

        return run_medsam_bench(args)
    if args.in_process or len(args.size) == 1:
        from segloop.engines.sam2.bench import bench_engine

        rows = [bench_engine(hiera=args.hiera, image_size=s, slices=args.slices,
                             precision=args.precision, device=args.device,
                             threads=args.threads,
                             encode_batch=args.encode_batch, xy=args.xy,
                             device_post=_POST[args.post], track=args.track,
                             sync_free=_SWITCH[args.sync_free],
                             compile=args.compile).as_dict()
                for s in args.size]
    else:
        rows = []
        for s in args.size:
            cmd = [sys.executable, "-c", "import sys; from segloop.cli import main; sys.exit(main())",
                   "bench", "engine", "--json",
                   "--in-process", "--size", str(s), "--hiera", args.hiera, "--slices",
                   str(args.slices), "--precision", args.precision, "--device", args.device,
                   "--threads", str(args.threads), "--xy", str(args.xy), "--post", args.post,
                   "--sync-free", args.sync_free]
            if args.compile:
                cmd.append("--compile")
            if args.track:
                cmd += ["--track", str(args.track)]
            if args.encode_batch:
                cmd += ["--encode-batch", str(args.encode_batch)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no message"])[-1]
                raise SegloopError(f"benchmark at {s} px failed: {last}")
            out = done.stdout
            rows += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    for r in rows:
        if args.json:
            print(json.dumps(r))
        else:
            print(f"hiera-{r['hiera']} {r['image_size']} px {r['device']} {r['precision']}"
                  f" on {r['xy']}x{r['xy']}x{r['tracked_slices'] + 1}"
                  f" {r['threads']} thread(s), encode batch {r['encode_batch']},"
                  f" post-processing on the {'device' if r['device_post'] else 'host'},"
                  f" sync-free {'on' if r['sync_free'] else 'off'},"
                  f" compile {'on' if r['compile'] else 'off'}:"
                  f" encoder {r['encoder_s']:.2f} s/slice,"
                  f" tracked slice {r['tracked_slice_s']:.2f} s ({r['tracked_slices']} slices),"
                  f" first 2D prompt {r['first_prompt_s']:.2f} s, repeated 2D prompt"
                  f" {r['repeated_prompt_ms']:.0f} ms, peak memory {r['peak_memory_mb']:.0f} MB"
                  f" (RSS after model {r['rss_model_mb']:.0f} MB, after open"
                  f" {r['rss_open_mb']:.0f} MB)"
                  f" | CPU time: encoder {r['encoder_cpu_s']:.2f} s, tracked slice"
                  f" {r['tracked_slice_cpu_s']:.2f} s, repeated prompt"
                  f" {r['repeated_prompt_cpu_ms']:.0f} ms")
            if r["compile"]:
                print(f"  compile warm-up (untimed propagation): {r['compile_warmup_s']:.1f} s")
            print("  per tracked slice, ms wall (CPU): " + ", ".join(
                f"{k} {v:.0f} ({r['parts_cpu_ms'][k]:.0f})" for k, v in r["parts_ms"].items()))
    if not args.json:
        print(REFERENCE)
    return 0
