"""Several users on one SAM 2 runtime, with and without the device scheduler (issue 16 item 3).

U simulated users (threads) share one model (hiera-``--hiera`` at ``--size`` px, random weights:
speed does not depend on the values), each with its own session on its own CT-like volume
(``--xy`` x ``--xy`` x ``--slices``). A quarter of them (``--propagating``, at least one when
U > 1) propagate from the middle slice again and again; the others prompt a box on a new slice
each time (so each prompt runs the image encoder, then the decoder), back to back. Each
configuration runs for ``--seconds``; the two modes alternate for each U (off, on, off, on...
with ``--repeat``), so a loaded machine slows both alike. Printed per run: slices/s (prompted
plus tracked slices), tracked slices/s, prompts/s, p50/p95 latency of a 2D prompt, encoder
batches and their mean size (scheduler), process CPU seconds (and slices per CPU second, the
steadier figure on a shared machine) and the load average. First, a
parity check: three users' masks (prompt + propagation) with the scheduler, concurrently, against
the same users one by one without it (min per-slice IoU). Usage::

    PYTHONPATH=src python benchmarks/bench_multiuser.py --device cpu --size 256 --xy 256 \\
        --slices 48 --users 1 4 16 --seconds 20 --threads 2
    PYTHONPATH=src python benchmarks/bench_multiuser.py --device cuda --size 512 --xy 512 \\
        --slices 100 --users 1 4 16 --seconds 8 --precision bf16
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from segloop.engines.sam2.bench import _synthetic_volume
from segloop.engines.sam2.runtime import (
    Runtime,
    default_cache_mb,
    default_encode_batch,
    default_scheduler_batch,
)
from segloop.engines.sam2.session import Sam2Session
from segloop.engines.scheduler import client_scope
from segloop.io.volume import Volume
from segloop.models.configs import build_config
from segloop.models.loader import build_model
from segloop.types import Prompts

__all__: list[str] = []


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    prompts: int = 0
    tracked: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _runtime(model: Any, dev: torch.device, bf16: bool, scheduler: bool, batch: int | None,
             wait_ms: float) -> Runtime:
    rt = Runtime(model=model, model_name="random", device=dev, use_bf16=bf16,
                 image_size=int(model.config.image_size), window="auto", largest_component=True,
                 fill_holes=0, cache_frames=32, lock=threading.RLock(),
                 cache_mb=default_cache_mb(dev), encode_batch=default_encode_batch(dev),
                 device_post=dev.type != "cpu")
    if scheduler:
        rt.start_scheduler(batch or default_scheduler_batch(dev), wait_ms / 1000.0)
    return rt


def _box(xy: int) -> Prompts:
    k = xy / 256.0
    return Prompts.make(box=(round(90 * k), round(80 * k), round(170 * k), round(150 * k)))


def _prompter(s: Sam2Session, user: str, nz: int, stop: float, tally: _Tally, box: Prompts,
              start: int) -> None:
    z = start
    with client_scope(user):
        while time.perf_counter() < stop:
            z = (z + 7) % nz  # a new slice each time: the encoder runs
            t0 = time.perf_counter()
            s.segment_slice(z, box)
            dt = time.perf_counter() - t0
            with tally.lock:
                tally.latencies.append(dt)
                tally.prompts += 1


def _propagator(s: Sam2Session, user: str, nz: int, stop: float, tally: _Tally,
                box: Prompts) -> None:
    mid = nz // 2
    with client_scope(user):
        while time.perf_counter() < stop:
            s.segment_slice(mid, box)
            gen = s.propagate(mid)
            for _ in gen:
                with tally.lock:
                    tally.tracked += 1
                if time.perf_counter() >= stop:
                    gen.close()  # type: ignore[attr-defined]
                    break


def _run(model: Any, dev: torch.device, vol: Volume, users: int, args: argparse.Namespace,
         scheduler: bool) -> dict[str, Any]:
    rt = _runtime(model, dev, args.precision == "bf16", scheduler, args.scheduler_batch,
                  args.wait_ms)
    nz = int(vol.shape[2])
    sessions = [Sam2Session(rt, vol) for _ in range(users)]
    n_prop = 0 if users == 1 else max(1, round(users * args.propagating))
    box = _box(args.xy)
    tally = _Tally()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    load0 = os.getloadavg()[0]
    c0, t0 = time.process_time(), time.perf_counter()
    stop = t0 + args.seconds
    threads = []
    for k, s in enumerate(sessions):
        if k < n_prop:
            fn: Any = _propagator
            a: tuple[Any, ...] = (s, f"user{k}", nz, stop, tally, box)
        else:
            fn, a = _prompter, (s, f"user{k}", nz, stop, tally, box, 3 * k)
        threads.append(threading.Thread(target=fn, args=a))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    lat = sorted(tally.latencies)
    sched = rt.scheduler
    out = {
        "users": users, "scheduler": scheduler, "propagating": n_prop, "seconds": wall,
        "slices_per_s": (tally.prompts + tally.tracked) / wall,
        "tracked_per_s": tally.tracked / wall, "prompts_per_s": tally.prompts / wall,
        "p50_ms": 1000 * statistics.median(lat) if lat else float("nan"),
        "p95_ms": 1000 * lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else float("nan"),
        "prompts": tally.prompts, "cpu_s": cpu, "load": (load0 + os.getloadavg()[0]) / 2,
        "batches": sched.stats.batches if sched else 0,
        "mean_batch": sched.stats.slices / max(sched.stats.batches, 1) if sched else 1.0,
        "peak_gpu_mb": (torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda"
                        else 0.0),
    }
    if sched is not None:
        sched.close()
    return out


def _parity(model: Any, dev: torch.device, args: argparse.Namespace, n: int = 3) -> float:
    """Min per-slice IoU between n users' masks (2D prompt + two-way propagation over
    ``--check-slices`` slices) run concurrently with the scheduler and one by one without."""
    bf16 = args.precision == "bf16"
    vols = [_synthetic_volume(args.xy, args.check_slices, seed=k) for k in range(n)]
    box, mid = _box(args.xy), args.check_slices // 2

    def run(rt: Runtime, vol: Volume, user: str, out: dict[str, Any]) -> None:
        with client_scope(user):
            s = Sam2Session(rt, vol)
            s.segment_slice(mid, box)
            for _ in s.propagate(mid):
                pass
            out[user] = s.mask()

    ref: dict[str, Any] = {}
    direct = _runtime(model, dev, bf16, False, None, args.wait_ms)
    for k, v in enumerate(vols):
        run(direct, v, f"u{k}", ref)
    got: dict[str, Any] = {}
    sched = _runtime(model, dev, bf16, True, args.scheduler_batch, args.wait_ms)
    threads = [threading.Thread(target=run, args=(sched, v, f"u{k}", got))
               for k, v in enumerate(vols)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ious = []
    for k in ref:
        a, b = ref[k], got[k]
        for z in range(a.shape[2]):
            union = (a[:, :, z] | b[:, :, z]).sum()
            ious.append(1.0 if union == 0 else float((a[:, :, z] & b[:, :, z]).sum() / union))
    assert sched.scheduler is not None
    sched.scheduler.close()
    return min(ious)


def _print(r: dict[str, Any]) -> None:
    mode = "scheduler" if r["scheduler"] else "direct   "
    extra = (f", {r['batches']} encoder batches of {r['mean_batch']:.1f} slices"
             if r["scheduler"] else "")
    gpu = f", peak {r['peak_gpu_mb']:.0f} MB GPU" if r["peak_gpu_mb"] else ""
    print(f"U={r['users']:>2} ({r['propagating']} propagating) {mode}: "
          f"{r['slices_per_s']:7.2f} slices/s ({r['tracked_per_s']:.2f} tracked, "
          f"{r['prompts_per_s']:.2f} prompts/s), 2D prompt p50 {r['p50_ms']:.0f} ms "
          f"p95 {r['p95_ms']:.0f} ms over {r['prompts']} prompts; {r['cpu_s']:.1f} CPU s "
          f"({r['slices_per_s'] * r['seconds'] / max(r['cpu_s'], 1e-9):.2f} slices per CPU s) in "
          f"{r['seconds']:.1f} s, load {r['load']:.1f}{extra}{gpu}", flush=True)


def main() -> None:
    """Run every U with the scheduler off and on (alternated) and print one line per run."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--hiera", default="tiny")
    ap.add_argument("--size", type=int, default=256, help="model input size (px)")
    ap.add_argument("--xy", type=int, default=256, help="the volumes' in-plane size")
    ap.add_argument("--slices", type=int, default=48)
    ap.add_argument("--users", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--seconds", type=float, default=20.0, help="per run")
    ap.add_argument("--repeat", type=int, default=1, help="off/on pairs per U")
    ap.add_argument("--propagating", type=float, default=0.25,
                    help="share of users propagating (at least one when U > 1)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scheduler-batch", type=int, default=None)
    ap.add_argument("--wait-ms", type=float, default=3.0)
    ap.add_argument("--check-slices", type=int, default=16,
                    help="slices of the parity check's volumes (0: no check)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(build_config(args.hiera, args.size), device=dev)
    vol = _synthetic_volume(args.xy, args.slices)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{os.cpu_count()} CPUs"
    print(f"hiera-{args.hiera} @ {args.size} px, random weights, {args.precision}, {dev} "
          f"({name}), {args.threads} torch threads, volumes {args.xy}x{args.xy}x{args.slices}, "
          f"{args.seconds:g} s per run, load average {os.getloadavg()[0]:.1f}", flush=True)
    warm = _runtime(model, dev, args.precision == "bf16", True, args.scheduler_batch,
                    args.wait_ms)
    s = Sam2Session(warm, vol)  # warm-up: kernels, allocator, the batch shapes
    s.segment_slice(args.slices // 2, _box(args.xy))
    for _ in zip(range(4), s.propagate(args.slices // 2), strict=False):
        pass
    frames = s._frames.batch(list(range(min(args.slices, warm.scheduler.max_batch
                                           if warm.scheduler else 1))))
    warm.encode_parts([list(frames.unbind(0))])
    if warm.scheduler is not None:
        warm.scheduler.close()
    del s
    if args.check_slices:
        t0 = time.perf_counter()
        iou = _parity(model, dev, args)
        print(f"parity: 3 users concurrently with the scheduler vs one by one without: "
              f"min per-slice IoU {iou:.6f} ({time.perf_counter() - t0:.1f} s)", flush=True)
    for users in args.users:
        for _ in range(args.repeat):
            for scheduler in (False, True):
                _print(_run(model, dev, vol, users, args, scheduler))


if __name__ == "__main__":
    main()
