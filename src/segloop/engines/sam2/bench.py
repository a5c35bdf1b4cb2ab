"""Speed and memory benchmark of the SAM 2 engine with random weights (imports torch).

:func:`bench_engine` builds a real-size model (Hiera ``size`` at ``image_size`` px, random
weights: speed does not depend on the values), opens a synthetic CT-like volume (``xy`` x ``xy``
in-plane, ``slices + 1`` slices, int16 HU as CT files store them) and measures
the image encoder per slice, a first 2D prompt (encode + decode), a repeated prompt on the
same slice (decoder only, thanks to the embedding cache), and a two-way propagation from the
middle slice: seconds per tracked slice. Peak memory is the process's peak RSS (CPU) or peak
CUDA allocation; on a CPU the peak RSS is also read after the model is built and after the
volume is opened, so the propagation's own share shows. As in the worker, the session is the
only holder of the volume once it is open. The
``*_cpu_*`` figures are process CPU time: on a machine shared with other jobs they estimate
the time on dedicated cores (divide by the thread count for multi-threaded runs).
Must not import FastAPI, Celery or the CLI.
"""

from __future__ import annotations

import resource
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from segloop.engines.base import drive
from segloop.engines.sam2.session import Runtime, Sam2Session
from segloop.io.volume import Volume
from segloop.models.configs import build_config
from segloop.types import Prompts

__all__ = ["BenchResult", "bench_engine"]


@dataclass(frozen=True)
class BenchResult:
    """Benchmark figures (seconds unless stated)."""

    hiera: str
    image_size: int
    device: str
    precision: str
    threads: int
    encode_batch: int
    device_post: bool
    sync_free: bool
    compile: bool
    encoder_s: float
    first_prompt_s: float
    repeated_prompt_ms: float
    tracked_slice_s: float
    tracked_slices: int
    peak_memory_mb: float
    xy: int
    rss_model_mb: float
    rss_open_mb: float
    encoder_cpu_s: float
    tracked_slice_cpu_s: float
    repeated_prompt_cpu_ms: float
    #: per tracked slice, ms of wall / CPU time in each part of the model during propagation
    #: (``other``: everything outside those modules: Python, memory bank, post-processing)
    parts_ms: dict[str, float] = field(default_factory=dict)
    parts_cpu_ms: dict[str, float] = field(default_factory=dict)
    #: with ``compile``: seconds of the untimed warm-up propagation that compiled the step
    compile_warmup_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able)."""
        return asdict(self)


def _synthetic_volume(n_xy: int, n_z: int, seed: int = 0) -> Volume:
    """A CT-like int16 volume (HU), made slice by slice so no float copy of it is ever held."""
    rng = np.random.default_rng(seed)
    data = np.empty((n_xy, n_xy, n_z), dtype=np.int16)
    xx, yy = np.meshgrid(np.arange(n_xy), np.arange(n_xy), indexing="ij")
    for z in range(n_z):
        sl = rng.normal(-50.0, 30.0, (n_xy, n_xy)).astype(np.float32)
        r = n_xy * (0.12 + 0.04 * np.sin(z / 3.0))
        sl[(xx - n_xy * 0.5) ** 2 + (yy - n_xy * 0.45) ** 2 < r * r] += 120.0
        data[:, :, z] = np.round(sl)
    return Volume(data=data, affine=np.eye(4), source_format="npz", modality="CT")


def _anchor_masks(n_xy: int, n_z: int, z: int, track: int) -> npt.NDArray[np.bool_]:
    """The synthetic organ's disc on every slice except the ``track`` around ``z`` (and z)."""
    xx, yy = np.meshgrid(np.arange(n_xy), np.arange(n_xy), indexing="ij")
    lo, hi = z - track // 2, z + track - track // 2
    mask = np.zeros((n_xy, n_xy, n_z), dtype=bool)
    for k in range(n_z):
        if not lo <= k <= hi:
            r = n_xy * (0.12 + 0.04 * np.sin(k / 3.0))
            mask[:, :, k] = (xx - n_xy * 0.5) ** 2 + (yy - n_xy * 0.45) ** 2 < r * r
    return mask


#: model parts timed per tracked slice (module attribute of ``Sam2VideoModel``)
PARTS = {"image_encoder": "vision_encoder", "memory_attention": "memory_attention",
         "prompt_encoder": "prompt_encoder", "mask_decoder": "mask_decoder",
         "memory_encoder": "memory_encoder"}


@contextmanager
def _timed_parts(model: Any, dev: torch.device) -> Iterator[tuple[dict[str, float],
                                                                   dict[str, float]]]:
    """Accumulate wall and CPU seconds spent in each of :data:`PARTS` while the block runs.

    On CUDA each part is bracketed by a synchronisation (so the figures are honest, at the cost
    of two syncs per part)."""
    wall = dict.fromkeys(PARTS, 0.0)
    cpu = dict.fromkeys(PARTS, 0.0)
    start: dict[str, tuple[float, float]] = {}
    handles = []

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for part, attr in PARTS.items():
        def pre(_m: Any, _a: Any, part: str = part) -> None:
            sync()
            start[part] = (time.perf_counter(), time.process_time())

        def post(_m: Any, _a: Any, _o: Any, part: str = part) -> None:
            sync()
            t0, c0 = start.pop(part)
            wall[part] += time.perf_counter() - t0
            cpu[part] += time.process_time() - c0

        mod = getattr(model, attr)
        handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    try:
        yield wall, cpu
    finally:
        for h in handles:
            h.remove()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_engine(
    hiera: str = "tiny",
    image_size: int = 512,
    slices: int = 8,
    precision: str = "fp32",
    device: str = "cpu",
    threads: int | None = 2,
    repeats: int = 5,
    config: dict[str, Any] | None = None,
    encode_batch: int | None = None,
    xy: int = 256,
    device_post: bool | None = None,
    track: int | None = None,
    sync_free: bool | None = None,
    compile: bool = False,
) -> BenchResult:
    """Measure one model configuration; see the module docstring for what is timed.

    ``encode_batch``: slices encoded per encoder call ahead of tracking (None: the engine's
    default for the device, 1: encode each slice when it is tracked). ``xy``: the volume's
    in-plane size (512 with ``slices=299`` is a 512x512x300 CT). The embedding cache and
    ``device_post`` (None) follow the engine's defaults for the device. ``track``: propagate
    over only that many slices around the middle (a correction in a long volume): every other
    slice first gets a stored mask (the synthetic organ's disc), which makes it an anchor, so
    the largest-component step still labels a full-height mask. Peak memory is then the full
    run's once ``track`` exceeds the embedding cache (16 slices at 512 px on a CPU).
    ``sync_free`` (None: the engine's default for the device) and ``compile`` are the
    runtime's switches (:mod:`.faststep`); with ``compile`` an untimed propagation runs first
    (its time is ``compile_warmup_s``) and the embedding cache is emptied before the timed one."""
    from segloop.engines.sam2.runtime import (
        bound_heap_growth,
        default_cache_mb,
        default_encode_batch,
    )
    from segloop.models.loader import build_model

    if threads:
        torch.set_num_threads(int(threads))
    dev = torch.device(device)
    if dev.type == "cpu":
        bound_heap_growth()  # as the engine does on a CPU
    torch.manual_seed(0)
    model = build_model(config or build_config(hiera, image_size), device=dev)
    rt = Runtime(
        model=model, model_name=f"random-{hiera}-{image_size}", device=dev,
        use_bf16=precision == "bf16", image_size=int(model.config.image_size), window="auto",
        largest_component=True, fill_holes=0, cache_frames=32, lock=threading.RLock(),
        cache_mb=default_cache_mb(dev), encode_batch=encode_batch or default_encode_batch(dev),
        device_post=dev.type != "cpu" if device_post is None else device_post,
        sync_free=False if sync_free is None else sync_free, compile=compile,
    )
    rss_model = _peak_rss_mb()
    # the session is the volume's only holder afterwards, as in the worker (jobs/runner.py)
    session = Sam2Session(rt, _synthetic_volume(xy, slices + 1))
    rss_open = _peak_rss_mb()
    k = xy / 256.0
    box = Prompts.make(box=(round(90 * k), round(80 * k), round(170 * k), round(150 * k)))
    z = (slices + 1) // 2  # two-way: slices z+1.. forward, then 0..z-1 backward
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    # image encoder alone, on a slice not used below
    frame = session._frames[slices].unsqueeze(0).to(dev)
    with torch.inference_mode(), rt.autocast():
        model.get_image_features(frame)  # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        model.get_image_features(frame)
        encoder_s, encoder_cpu = time.perf_counter() - t0, time.process_time() - c0
    if track is not None and track < slices:
        session.set_mask(_anchor_masks(xy, slices + 1, z, track))
    t0 = time.perf_counter()
    session.segment_slice(z, box)
    first_s = time.perf_counter() - t0
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        session.segment_slice(z, box)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    warmup = 0.0
    if compile:
        t0 = time.perf_counter()
        drive(session.propagate(z))
        warmup = time.perf_counter() - t0
        session._cache.clear_all()
    with _timed_parts(model, dev) as (part_wall, part_cpu):
        t0, c0 = time.perf_counter(), time.process_time()
        n = drive(session.propagate(z))
        track_s = (time.perf_counter() - t0) / max(n, 1)
        track_cpu = (time.process_time() - c0) / max(n, 1)
    per = 1000.0 / max(n, 1)
    parts_ms = {k: v * per for k, v in part_wall.items()}
    parts_ms["other"] = 1000.0 * track_s - sum(parts_ms.values())
    parts_cpu_ms = {k: v * per for k, v in part_cpu.items()}
    parts_cpu_ms["other"] = 1000.0 * track_cpu - sum(parts_cpu_ms.values())
    peak = (torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda"
            else _peak_rss_mb())
    return BenchResult(
        hiera=hiera, image_size=int(model.config.image_size), device=str(dev),
        precision="bf16" if rt.use_bf16 else "fp32", threads=torch.get_num_threads(),
        encode_batch=rt.encode_batch, device_post=rt.device_post, sync_free=rt.sync_free,
        compile=rt.compile, compile_warmup_s=warmup,
        encoder_s=encoder_s, first_prompt_s=first_s,
        repeated_prompt_ms=1000.0 * statistics.median(times), tracked_slice_s=track_s,
        tracked_slices=n, peak_memory_mb=peak, xy=xy, rss_model_mb=rss_model,
        rss_open_mb=rss_open, encoder_cpu_s=encoder_cpu,
        tracked_slice_cpu_s=track_cpu, repeated_prompt_cpu_ms=1000.0 * statistics.median(cpu),
        parts_ms=parts_ms, parts_cpu_ms=parts_cpu_ms,
    )
