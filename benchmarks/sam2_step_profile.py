"""Where one tracked slice's CPU time goes, and CPU switches A/B'd with the masks compared.

hiera-tiny at 512 px, random weights, a synthetic 512x512 CT-like volume (``segloop bench
engine``'s), a box on the middle slice, forward tracking over ``--track`` slices. Per variant it
prints the ms of CPU (and wall) time per tracked slice in each part of the model (image encoder,
memory attention, prompt encoder, mask decoder, memory encoder, other) and, with
``--profile``, torch.profiler's top operators by self CPU time over the last tracked slices.
Variants run in turn, ``--rounds`` times (A B B A ...), in one process, so a loaded machine
slows them alike; each variant's masks are compared with the first variant's (per-slice IoU and
identical-slice count). CPU time is the honest figure on a shared machine; divide by the
thread count for dedicated cores. Usage::

    PYTHONPATH=src python benchmarks/sam2_step_profile.py --track 6 --profile 2
    PYTHONPATH=src python benchmarks/sam2_step_profile.py --track 4 --rounds 2 \\
        --variants base channels_last
    PYTHONPATH=src python benchmarks/sam2_step_profile.py --encoder-rounds 8 \\
        --variants base channels_last
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from segloop.engines.sam2.bench import _synthetic_volume, _timed_parts
from segloop.engines.sam2.runtime import Runtime, bound_heap_growth
from segloop.engines.sam2.session import Sam2Session
from segloop.models.configs import build_config
from segloop.models.loader import build_model
from segloop.types import Prompts

__all__: list[str] = []


def _channels_last(model: Any, on: bool) -> None:
    fmt = torch.channels_last if on else torch.contiguous_format
    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
            mod.weight.data = mod.weight.data.contiguous(memory_format=fmt)


def _mkldnn(on: bool) -> None:
    torch.backends.mkldnn.enabled = on


#: the runtime's opt-in warm heap (segloop.engines.sam2.heap) for the next runs
_WARM_HEAP = [False]


def _warm_heap(on: bool) -> None:
    _WARM_HEAP[0] = on


def _rope_memo(model: Any, on: bool) -> None:
    tables = getattr(model.memory_attention.rotary_emb, "_segloop_rope", None)
    if tables is not None:
        tables.enabled = on


#: variant -> (switch on, switch off); "base" switches nothing
VARIANTS: dict[str, tuple[Callable[[Any], None], Callable[[Any], None]]] = {
    "base": (lambda m: None, lambda m: None),
    "channels_last": (lambda m: _channels_last(m, True), lambda m: _channels_last(m, False)),
    "no_mkldnn": (lambda m: _mkldnn(False), lambda m: _mkldnn(True)),
    "warm_heap": (lambda m: _warm_heap(True), lambda m: _warm_heap(False)),
    "no_rope_memo": (lambda m: _rope_memo(m, False), lambda m: _rope_memo(m, True)),
}


def _run(model: Any, vol_xy: int, track: int, profile: int, shapes: bool = False
         ) -> tuple[np.ndarray, dict[str, float], dict[str, float], Any]:
    rt = Runtime(model=model, model_name="random-tiny-512", device=torch.device("cpu"),
                 use_bf16=False, image_size=int(model.config.image_size), window="auto",
                 largest_component=False, fill_holes=0, cache_frames=32, lock=threading.RLock(),
                 cache_mb=64.0, encode_batch=1, device_post=False, warm_heap=_WARM_HEAP[0])
    session = Sam2Session(rt, _synthetic_volume(vol_xy, track + 1))
    k = vol_xy / 256.0
    box = Prompts.make(box=(round(90 * k), round(80 * k), round(170 * k), round(150 * k)))
    session.segment_slice(0, box)
    prof = None
    with _timed_parts(model, torch.device("cpu")) as (wall, cpu):
        gen = session.propagate(0)
        t0, c0 = time.perf_counter(), time.process_time()
        n = 0
        for _ in range(track - profile):
            next(gen)
            n += 1
        if profile:
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as torch_profile

            with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=shapes) as prof:
                for r in gen:
                    n += 1
                    del r
        else:
            for _ in gen:
                n += 1
        total_wall, total_cpu = time.perf_counter() - t0, time.process_time() - c0
    per = 1000.0 / n
    parts_cpu = {p: v * per for p, v in cpu.items()}
    parts_cpu["other"] = total_cpu * per - sum(parts_cpu.values())
    parts_cpu["tracked slice"] = total_cpu * per
    parts_wall = {p: v * per for p, v in wall.items()}
    parts_wall["tracked slice"] = total_wall * per
    return session.mask(), parts_cpu, parts_wall, prof


def _encoder_ab(model: Any, variants: list[str], rounds: int) -> None:
    """The image encoder alone, variants alternated A B B A ..., features compared."""
    x = torch.randn(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    feats: dict[str, list[torch.Tensor]] = {}
    loads = [os.getloadavg()[0]]
    with torch.inference_mode():
        model.get_image_features(x)  # warm-up
        for rnd in range(rounds):
            for v in variants if rnd % 2 == 0 else variants[::-1]:
                on, off = VARIANTS[v]
                on(model)
                try:
                    c0 = time.process_time()
                    out = model.get_image_features(x, return_dict=True)
                    cpu[v].append(time.process_time() - c0)
                finally:
                    off(model)
                feats.setdefault(v, [f.contiguous() for f in out.fpn_hidden_states])
        loads.append(os.getloadavg()[0])
    print(f"image encoder alone, load average {min(loads):.1f}-{max(loads):.1f},"
          f" {torch.get_num_threads()} thread(s), {rounds} rounds (A B B A ...), median CPU ms")
    ref = feats[variants[0]]
    for v in variants:
        diff = max(float((a - b).abs().max()) for a, b in zip(ref, feats[v], strict=True))
        print(f"  {v:14s} {statistics.median(cpu[v]) * 1000:8.0f}"
              f"   max |features - {variants[0]}| {diff:.3g}")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return 1.0 if union == 0 else float((a & b).sum()) / union


def main() -> None:
    """Run the variants in turn and print per-part CPU ms and the mask agreement."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--track", type=int, default=6, help="tracked slices per run")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--interop", type=int, default=None, help="torch interop threads")
    ap.add_argument("--xy", type=int, default=512)
    ap.add_argument("--profile", type=int, default=0,
                    help="profile the last N tracked slices of the first run (torch.profiler)")
    ap.add_argument("--shapes", action="store_true",
                    help="with --profile: one row per operator and input shapes")
    ap.add_argument("--encoder-rounds", type=int, default=0,
                    help="only A/B the image encoder alone, this many rounds")
    ap.add_argument("--variants", nargs="+", default=["base"], choices=sorted(VARIANTS))
    args = ap.parse_args()
    if args.interop:
        torch.set_num_interop_threads(args.interop)
    torch.set_num_threads(args.threads)
    bound_heap_growth()
    torch.manual_seed(0)
    model = build_model(build_config("tiny", 512))
    if args.encoder_rounds:
        _encoder_ab(model, args.variants, args.encoder_rounds)
        return
    loads = [os.getloadavg()[0]]
    results: dict[str, list[tuple[dict[str, float], dict[str, float]]]] = {
        v: [] for v in args.variants}
    masks: dict[str, np.ndarray] = {}
    for rnd in range(args.rounds):
        for v in args.variants if rnd % 2 == 0 else args.variants[::-1]:  # A B B A ...
            on, off = VARIANTS[v]
            on(model)
            try:
                mask, cpu, wall, prof = _run(model, args.xy, args.track,
                                             args.profile if rnd == 0 else 0, args.shapes)
            finally:
                off(model)
            results[v].append((cpu, wall))
            masks.setdefault(v, mask)
            loads.append(os.getloadavg()[0])
            if prof is not None:
                print(f"--- {v}: top operators by self CPU time, last {args.profile} slice(s)")
                print(prof.key_averages(group_by_input_shape=args.shapes).table(
                    sort_by="self_cpu_time_total", row_limit=40 if args.shapes else 25))
    print(f"load average {min(loads):.1f}-{max(loads):.1f}, {args.threads} thread(s),"
          f" interop {torch.get_num_interop_threads()}, {args.track} tracked slices x"
          f" {args.rounds} round(s); median ms per tracked slice, CPU (wall)")
    ref = masks[args.variants[0]]
    for v, rows in results.items():
        print(f"  {v}:")
        for part in rows[0][0]:
            cpu = statistics.median(r[0][part] for r in rows)
            wall = statistics.median(r[1].get(part, float("nan")) for r in rows)
            print(f"    {part:18s} {cpu:8.0f} ({wall:.0f})")
        ious = [_iou(ref[:, :, z], masks[v][:, :, z]) for z in range(ref.shape[2])]
        same = sum(bool(np.array_equal(ref[:, :, z], masks[v][:, :, z]))
                   for z in range(ref.shape[2]))
        print(f"    masks vs {args.variants[0]}: min IoU {min(ious):.5f},"
              f" {same}/{ref.shape[2]} slices identical")


if __name__ == "__main__":
    main()
