"""A/B of the SAM 2 tracking step's switches (issue 16 item 1), side by side in one process.

One model (hiera ``--hiera`` at ``--size`` px, random weights), one synthetic CT-like volume of
``--xy`` x ``--xy`` x (``--slices`` + 1), a box on the middle slice and a full two-way
propagation, run for each configuration in turn:

- ``plain``: the step as before (a host sync per slice: object-pointer offsets copied to the
  device, frames copied per encoder batch, blocking mask copies);
- ``sync_free``: no host sync per slice (:mod:`segloop.engines.sam2.faststep`);
- ``compile``: memory attention, prompt encoder, mask decoder and memory encoder through
  ``torch.compile``
  (CUDA graphs on CUDA);
- ``all``: both.

Each configuration first propagates on a short warm-up volume (41 slices, or the timed
volume's size if smaller: the memory bank fills in both directions, so a compiled step meets
every shape of the timed run; the warm-up of the first compiled configuration is the compile
time), then the timed run. Printed per configuration: slices/s (wall, device synchronised),
CPU ms per slice, peak GPU memory (``torch.cuda.max_memory_allocated``; peak RSS on a CPU),
host syncs per tracked slice (CUDA: counted with ``torch.cuda.set_sync_debug_mode`` on a
second run of the warm-up volume) and the per-slice IoU against ``plain`` (min, and the
number of slices under 0.999). ``--memcheck N`` then runs ``all`` on an N-slice volume
(e.g. 1000) for its peak memory. ``--profile`` counts, per tracked slice, the top-level
operators (CPU) or the kernel and graph launches and copies the host issues (CUDA), with
``torch.profiler`` on the warm-up volume.

Usage (GPU; about 2-3 minutes on an H100 with the compile warm-up)::

    PYTHONPATH=src python benchmarks/gpu_track_ab.py --device cuda --precision bf16 \\
        --size 512 --xy 512 --slices 200 --memcheck 1000

CPU smoke test::

    PYTHONPATH=src python benchmarks/gpu_track_ab.py --device cpu --size 128 --xy 128 \\
        --slices 8 --precision fp32
"""

from __future__ import annotations

import argparse
import json
import resource
import threading
import time
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
import torch

from segloop.engines.base import drive
from segloop.engines.sam2.bench import _synthetic_volume
from segloop.engines.sam2.runtime import Runtime, default_cache_mb, default_encode_batch
from segloop.engines.sam2.session import Sam2Session
from segloop.io.volume import Volume
from segloop.models.configs import build_config
from segloop.models.loader import build_model
from segloop.types import Prompts

__all__: list[str] = []

#: configuration name -> (sync_free, compile)
CONFIGS: dict[str, tuple[bool, bool]] = {
    "plain": (False, False), "sync_free": (True, False), "compile": (False, True),
    "all": (True, True),
}
WARMUP_SLICES = 40


@dataclass
class Row:
    """One configuration's figures."""

    config: str
    slices: int
    slices_per_s: float
    cpu_ms_per_slice: float
    peak_mb: float
    warmup_s: float
    syncs_per_slice: float | None
    min_iou: float
    slices_below_0999: int
    identical_slices: int
    #: share of the volume's voxels in the mask (random weights: IoU on empty masks is trivial)
    foreground: float
    ops_per_slice: float | None = None


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _peak_mb(dev: torch.device) -> float:
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _box(xy: int) -> Prompts:
    k = xy / 256.0
    return Prompts.make(box=(round(90 * k), round(80 * k), round(170 * k), round(150 * k)))


def _propagate(rt: Runtime, vol: Volume, xy: int) -> tuple[npt.NDArray[np.bool_], int]:
    """A fresh session: the middle slice boxed, then a full two-way propagation."""
    session = Sam2Session(rt, vol)
    z = session.shape[2] // 2
    session.segment_slice(z, _box(xy))
    n = drive(session.propagate(z))
    return session.mask(), n


def _count_syncs(rt: Runtime, vol: Volume, xy: int) -> float | None:
    """Host syncs per tracked slice (CUDA only: torch's sync debug mode warns on each)."""
    if rt.device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            _, n = _propagate(rt, vol, xy)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message).lower() for w in caught)
    return syncs / max(n, 1)


_LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaGraphLaunch", "cuGraphLaunch",
             "cudaMemcpy", "cudaMemset")


def _count_ops(rt: Runtime, vol: Volume, xy: int) -> float | None:
    """Top-level operators (CPU) or kernel / graph launches and copies issued by the host
    (CUDA) per tracked slice of a propagation; None when the profiler fails."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if rt.device.type == "cuda" else [])
    try:
        with profile(activities=acts) as prof:
            _, n = _propagate(rt, vol, xy)
            _sync(rt.device)
    except Exception as exc:  # the figure is optional: keep the configuration's others
        print(f"# profile failed: {type(exc).__name__}: {exc}".splitlines()[0], flush=True)
        return None
    if rt.device.type == "cuda":  # launches from the host: a CUDA graph replay is one
        count = sum(1 for e in prof.events() if e.name.startswith(_LAUNCHES))
    else:  # top-level aten operators (not the ops they call)
        count = sum(1 for e in prof.events() if e.name.startswith("aten::")
                    and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")))
    return count / max(n, 1)


def _ious(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    inter = (a & b).sum(axis=(0, 1))
    union = (a | b).sum(axis=(0, 1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def _run_config(rt: Runtime, name: str, warm_vol: Volume, vol: Volume, xy: int, profile: bool,
                reference: npt.NDArray[np.bool_] | None) -> tuple[Row, npt.NDArray[np.bool_]]:
    """Warm up, then time one configuration; its figures and its masks."""
    dev = rt.device
    rt.sync_free, rt.compile = CONFIGS[name]
    t0 = time.perf_counter()
    _propagate(rt, warm_vol, xy)
    _sync(dev)
    warmup = time.perf_counter() - t0
    syncs = _count_syncs(rt, warm_vol, xy)  # after the warm-up: compiling syncs too
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    _sync(dev)
    t0, c0 = time.perf_counter(), time.process_time()
    mask, n = _propagate(rt, vol, xy)
    _sync(dev)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = _peak_mb(dev)
    ops = _count_ops(rt, warm_vol, xy) if profile else None  # after timing: it may disturb
    ref = mask if reference is None else reference
    ious = _ious(mask, ref)
    row = Row(config=name, slices=n, slices_per_s=n / wall, cpu_ms_per_slice=1000 * cpu / n,
              peak_mb=peak, warmup_s=warmup, syncs_per_slice=syncs,
              min_iou=float(ious.min()), slices_below_0999=int((ious < 0.999).sum()),
              identical_slices=int((mask == ref).all(axis=(0, 1)).sum()),
              foreground=float(mask.mean()), ops_per_slice=ops)
    return row, mask


def main() -> None:
    """Run every configuration and print one line (or JSON object) each."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--hiera", default="tiny", choices=["tiny", "small", "base-plus", "large"])
    ap.add_argument("--size", type=int, default=512, help="model input size, px")
    ap.add_argument("--xy", type=int, default=512, help="in-plane voxels of the volume")
    ap.add_argument("--slices", type=int, default=200, help="slices tracked (volume: one more)")
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--fill-holes", type=int, default=None,
                    help="SAM 2 hole filling px (default: the engine's, 8 on CUDA, 0 on a CPU)")
    ap.add_argument("--warmup-slices", type=int, default=None,
                    help=f"slices tracked by each warm-up (default min({WARMUP_SLICES}, --slices))")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--memcheck", type=int, default=0,
                    help="then run 'all' on a volume of this many slices (peak memory)")
    ap.add_argument("--profile", action="store_true",
                    help="count operators / CUDA kernels per tracked slice (warm-up volume)")
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(build_config(args.hiera, args.size), device=dev)
    rt = Runtime(
        model=model, model_name=f"random-{args.hiera}-{args.size}", device=dev,
        use_bf16=args.precision == "bf16", image_size=int(model.config.image_size),
        window="auto", largest_component=True,
        fill_holes=args.fill_holes if args.fill_holes is not None else
        (8 if dev.type == "cuda" else 0),
        cache_frames=32, lock=threading.RLock(), cache_mb=default_cache_mb(dev),
        encode_batch=default_encode_batch(dev), device_post=dev.type != "cpu",
    )
    warm = args.warmup_slices or min(WARMUP_SLICES, args.slices)
    warm_vol = _synthetic_volume(args.xy, warm + 1, seed=1)
    vol = _synthetic_volume(args.xy, args.slices + 1)
    print(f"# {torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'},"
          f" torch {torch.__version__}, hiera-{args.hiera} {args.size} px {args.precision},"
          f" volume {args.xy}x{args.xy}x{args.slices + 1}, fill_holes {rt.fill_holes},"
          f" encode batch {rt.encode_batch}", flush=True)
    reference: npt.NDArray[np.bool_] | None = None
    rows: list[Row] = []
    for name in args.configs:
        try:
            row, mask = _run_config(rt, name, warm_vol, vol, args.xy, args.profile, reference)
        except Exception as exc:  # one broken configuration must not lose the others
            print(f"{name:10s} FAILED: {type(exc).__name__}: {exc}".splitlines()[0], flush=True)
            continue
        if reference is None:
            reference = mask
        rows.append(row)
        failures = rt.fast.compile_failures
        if args.json:
            print(json.dumps({**asdict(row), "compile_failures": failures}), flush=True)
        else:
            print(f"{name:10s} {row.slices_per_s:8.1f} slices/s  {row.cpu_ms_per_slice:7.1f} CPU"
                  f" ms/slice  peak {row.peak_mb:8.0f} MB  warm-up {row.warmup_s:6.1f} s"
                  f"  syncs/slice"
                  f" {'-' if row.syncs_per_slice is None else f'{row.syncs_per_slice:.2f}'}"
                  f"{'' if row.ops_per_slice is None else f'  ops/slice {row.ops_per_slice:.0f}'}"
                  f"  IoU vs {rows[0].config}: min {row.min_iou:.4f},"
                  f" {row.slices_below_0999} slices < 0.999,"
                  f" {row.identical_slices}/{mask.shape[2]} identical, foreground"
                  f" {100 * row.foreground:.1f} %"
                  f"{'  COMPILE FAILED: ' + str(failures) if failures else ''}", flush=True)
    base = next((r for r in rows if r.config == "plain"), None)
    if base is not None and not args.json:
        print("speed-up vs plain: " + ", ".join(
            f"{r.config} {r.slices_per_s / base.slices_per_s:.2f}x" for r in rows))
    if args.memcheck:
        del vol
        rt.sync_free, rt.compile = CONFIGS["all"]
        big = _synthetic_volume(args.xy, args.memcheck + 1, seed=2)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        try:
            _, n = _propagate(rt, big, args.xy)
            _sync(dev)
        except torch.OutOfMemoryError as exc:
            print(f"memcheck  OUT OF MEMORY on {args.memcheck + 1} slices:"
                  f" {str(exc).splitlines()[0]}", flush=True)
            return
        wall = time.perf_counter() - t0
        out = {"config": "all", "memcheck_slices": n, "slices_per_s": n / wall,
               "peak_mb": _peak_mb(dev)}
        print(json.dumps(out) if args.json else
              f"memcheck  all on {args.xy}x{args.xy}x{args.memcheck + 1}: {n / wall:.1f} slices/s,"
              f" peak {out['peak_mb']:.0f} MB", flush=True)


if __name__ == "__main__":
    main()
