"""Per tracked slice at 512 px on the CPU, old code vs new, side by side, masks compared.

Issue 16 item 2 (goal <= 0.30 s per tracked slice at 512 on 2 threads, masks unchanged).
Each run is a fresh process (its own heap, as the engine's) on one code tree: ``OLD_SRC``
(e.g. a ``git archive`` of main's ``src``) or this checkout's ``src``; runs alternate
old, new, new, old, ... (``--rounds`` pairs) so a changing load hits both alike. A run builds
hiera-tiny at 512 px (random weights, seed 0), opens the synthetic 512x512 CT-like volume of
``segloop bench engine``, puts a box on slice 0 and tracks ``--track`` slices forward on
``--threads`` threads, timing each tracked slice (wall and process CPU). Prints per code tree
the median over its runs of the mean per tracked slice (all tracked slices, and the steady
ones once the memory bank is full, slice 8 on), the new/old ratios, the load average, and
the masks' agreement (identical slices, min IoU). Usage (from the repository root)::

    rm -rf /tmp/segloop-main && mkdir -p /tmp/segloop-main \\
      && git -C /work/main archive HEAD src | tar -x -C /tmp/segloop-main \\
      && PYTHONPATH=src python benchmarks/sam2_cpu_old_new.py /tmp/segloop-main/src
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__: list[str] = []

#: tracked slices before the memory bank is full (num_maskmem = 7: the conditioning slice
#: and 6 tracked ones)
STEADY_FROM = 7


def _child(track: int, threads: int, out: str, warm: bool) -> None:
    """One run on whatever ``segloop`` is importable; writes the mask and the times."""
    import threading

    import torch

    from segloop.engines.sam2.bench import _synthetic_volume
    from segloop.engines.sam2.runtime import Runtime, bound_heap_growth
    from segloop.engines.sam2.session import Sam2Session
    from segloop.models.configs import build_config
    from segloop.models.loader import build_model
    from segloop.types import Prompts

    torch.set_num_threads(threads)
    bound_heap_growth()  # as the engine does on a CPU
    torch.manual_seed(0)
    model = build_model(build_config("tiny", 512))
    extra: dict[str, Any] = {"warm_heap": True} if warm else {}  # the new code's opt-in
    rt = Runtime(model=model, model_name="random-tiny-512", device=torch.device("cpu"),
                 use_bf16=False, image_size=512, window="auto", largest_component=False,
                 fill_holes=0, cache_frames=32, lock=threading.RLock(), cache_mb=64.0,
                 encode_batch=1, device_post=False, **extra)
    session = Sam2Session(rt, _synthetic_volume(512, track + 1))
    session.segment_slice(0, Prompts.make(box=(180, 160, 340, 300)))
    walls, cpus = [], []
    gen = session.propagate(0)
    while True:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            next(gen)
        except StopIteration:
            break
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    np.save(out, session.mask())
    print(json.dumps({"wall": walls, "cpu": cpus, "segloop": sys.modules["segloop"].__file__}))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return 1.0 if union == 0 else float((a & b).sum()) / union


def main() -> None:
    """Alternate old and new runs and print the side-by-side figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old_src", nargs="?", help="the old code's src folder")
    ap.add_argument("--new-src", default=str(Path(__file__).resolve().parents[1] / "src"))
    ap.add_argument("--track", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2, help="old/new pairs, alternated")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warm-heap", action="store_true",
                    help="also run the new code with its opt-in warm heap (column new+warm)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.track, args.threads, args.child, args.warm_heap)
        return
    if not args.old_src:
        ap.error("old_src is required")
    trees = {"old": str(Path(args.old_src).resolve()), "new": str(Path(args.new_src).resolve())}
    names = ["old", "new"] + (["new+warm"] if args.warm_heap else [])
    trees["new+warm"] = trees["new"]
    order = [t for r in range(args.rounds) for t in (names if r % 2 == 0 else names[::-1])]
    runs: dict[str, list[dict[str, list[float]]]] = {n: [] for n in names}
    masks: dict[str, np.ndarray] = {}
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        for i, tree in enumerate(order):
            out = str(Path(tmp) / f"{i}.npy")
            env = dict(os.environ, PYTHONPATH=trees[tree])
            cmd = [sys.executable, __file__, "--child", out, "--track", str(args.track),
                   "--threads", str(args.threads)] + (["--warm-heap"] if tree == "new+warm"
                                                      else [])
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            assert str(res["segloop"]).startswith(trees[tree]), res["segloop"]
            runs[tree].append(res)
            mask = np.load(out)
            masks.setdefault(tree, mask)
            loads.append(os.getloadavg()[0])
            print(f"  run {i + 1}/{len(order)} {tree}: {statistics.mean(res['wall']):.3f} s wall,"
                  f" {statistics.mean(res['cpu']):.3f} s CPU per tracked slice", flush=True)
            if not np.array_equal(mask, masks[tree]):
                print(f"  note: run {i + 1} ({tree}) gave other masks than its first run")

    def per_slice(tree: str, key: str, steady: bool) -> float:
        return statistics.median(statistics.mean(r[key][STEADY_FROM:] if steady else r[key])
                                 for r in runs[tree])

    print(f"hiera-tiny 512 px, random weights, {args.track} tracked slices, {args.threads}"
          f" thread(s), {len(order)} runs (old new new old ...), load average"
          f" {min(loads):.2f}-{max(loads):.2f}")
    head = "".join(f" {n:>9s}" for n in names) + "".join(f" {n + '/old':>13s}"
                                                        for n in names[1:])
    print(f"  {'s per tracked slice':34s}{head}")
    for steady in (False, True) if args.track > STEADY_FROM else (False,):
        for key in ("wall", "cpu"):
            vals = [per_slice(n, key, steady) for n in names]
            label = f"{key} ({'steady, slice 8 on' if steady else 'all tracked'})"
            print(f"  {label:34s}" + "".join(f" {v:9.3f}" for v in vals)
                  + "".join(f" {v / vals[0]:13.3f}" for v in vals[1:]))
    a = masks["old"]
    for n in names[1:]:
        b = masks[n]
        same = sum(bool(np.array_equal(a[:, :, z], b[:, :, z])) for z in range(a.shape[2]))
        ious = [_iou(a[:, :, z], b[:, :, z]) for z in range(a.shape[2])]
        print(f"  masks {n} vs old: {same}/{a.shape[2]} slices identical, min IoU"
              f" {min(ious):.5f}, {int(a.sum())} voxels old, {int(b.sum())} {n}")


if __name__ == "__main__":
    main()
