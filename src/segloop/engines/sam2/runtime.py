"""The loaded SAM 2-family model and the settings all sessions of one engine share (imports torch).

:class:`Runtime` resolves the device and precision once per engine; sessions read it. With the
device scheduler on (``scheduler``), every image-encoder call of every session goes through one
:class:`~segloop.engines.scheduler.DeviceScheduler` per runtime, which batches the slices of
concurrent sessions (:meth:`Runtime.encode_parts` is the batch it runs).
Must not import FastAPI, Celery or the CLI.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from segloop.engines.sam2.faststep import FastStep, install_fast_step
from segloop.engines.sam2.heap import BOUND_MMAP_THRESHOLD, set_mmap_threshold
from segloop.engines.sam2.rope import memoise_rope
from segloop.engines.scheduler import DeviceLock, DeviceScheduler, Priority

__all__ = [
    "OFFLOAD_ABOVE",
    "Runtime",
    "SliceFeatures",
    "bound_heap_growth",
    "default_cache_mb",
    "default_encode_batch",
    "default_scheduler_batch",
    "memoise_position_encodings",
    "use_channels_last",
]

log = logging.getLogger(__name__)

#: on an accelerator, volumes with more slices than this keep the memory bank on the CPU
OFFLOAD_ABOVE = 256


def memoise_position_encodings(model: Any, max_entries: int = 16) -> None:
    """Compute the image encoder's sine position encodings once per shape, not per slice.

    They depend on the feature shape only; transformers' own cache keeps one shape while
    the neck asks for four in turn, so every slice recomputed them (~30-100 ms of CPU time
    per slice at 512 px on 2 threads). Same tensors, same values: masks do not change. One
    image's encodings are kept per shape and expanded to the batch size (no per-image copies).
    Idempotent."""
    neck = getattr(getattr(model, "vision_encoder", None), "neck", None)
    pe = getattr(neck, "position_encoding", None)
    if pe is None or getattr(pe, "_segloop_memo", None) is not None:
        return
    original = pe.forward
    memo: dict[tuple[Any, ...], Any] = {}

    def forward(shape: Any, device: Any, dtype: Any, mask: Any = None) -> Any:
        if mask is not None:
            return original(shape, device, dtype, mask)
        # one image's encodings, expanded to the batch: a batch of 16 at 512 px would hold
        # 16 identical copies (350 MB) otherwise
        key = (tuple(shape[1:]), str(device), dtype)
        out = memo.get(key)
        if out is None:
            if len(memo) >= max_entries:
                memo.clear()
            out = memo[key] = original((1, *tuple(shape[1:])), device, dtype)
        return out if int(shape[0]) == 1 else out.expand(int(shape[0]), -1, -1, -1)

    pe.forward = forward
    pe._segloop_memo = memo


def use_channels_last(model: Any) -> None:
    """Store every 2D convolution's weight channels-last (NHWC), the layout oneDNN computes in.

    The convolutions then skip a layout conversion per call and hand channels-last outputs on
    (free permutes in Hiera's patch embedding). Not bit-identical: features differ by ~1e-7."""
    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
            mod.weight.data = mod.weight.data.contiguous(memory_format=torch.channels_last)


def bound_heap_growth(threshold: int = BOUND_MMAP_THRESHOLD) -> bool:
    """On glibc, serve allocations of ``threshold`` bytes and more by mmap, returned on free.

    glibc raises its mmap threshold each time a large block is freed (up to 32 MB), after
    which torch's per-slice activations come from the heap and the freed space is kept: at
    512 px the tracking step's peak RSS grew by ~150 MB that way (``segloop bench engine``
    on a 12-slice run: 878 MB by default, 728 MB with 4 MiB). Fixing the threshold stops the
    growth. Process-wide and harmless elsewhere; returns False where there is no glibc (the
    glibc handle is :mod:`.heap`'s, which also warms the heap while tracking)."""
    return set_mmap_threshold(threshold)


def _bf16_cpu_supported() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def default_cache_mb(device: torch.device) -> float:
    """The embedding cache's byte bound: 256 MB on an accelerator (its memory), 64 MB on a CPU.

    On a CPU the cache is process memory: at 512 px a slice's features are 4 MB, and 64 MB
    (16 slices) keeps a 512x512x300 CT's peak RSS under 1 GB; a propagation encodes each slice
    once whatever the bound, only a re-propagation over the same slices re-encodes more."""
    return 256.0 if device.type != "cpu" else 64.0


def default_encode_batch(device: torch.device) -> int:
    """Slices encoded per image-encoder call ahead of tracking: 16 on an accelerator, 1 on a CPU.

    On a GPU the batch is what makes the encoder fast; on 2 CPU cores a batch of 4 gave no
    measurable speed-up (busy shared machine) and ~230 MB more peak RSS at 512 px."""
    return 16 if device.type != "cpu" else 1


def default_scheduler_batch(device: torch.device) -> int:
    """Slices per shared encoder batch of the device scheduler: 32 on an accelerator, 4 on a CPU.

    On a GPU the encoder's time per slice falls steeply up to batch ~32 (issue 16: 87 slices/s
    at batch 1, 1,116 at 32 on an H200); on a CPU the batch saves little and costs memory."""
    return 32 if device.type != "cpu" else 4


@dataclass(frozen=True)
class SliceFeatures:
    """One slice's image-encoder output: ``feats`` per FPN level ``(H*W, 1, C)`` and the
    position encodings ``pos`` (the same for every slice of a model: shared, not copied)."""

    feats: list[torch.Tensor]
    pos: list[torch.Tensor]


@dataclass
class Runtime:
    """A loaded model and the settings every session of an engine shares.

    ``cache_mb`` bounds a session's image-embedding cache by bytes (as well as ``cache_frames``
    by count); ``encode_batch`` is the number of slices encoded per encoder call ahead of
    tracking (1 = encode each slice when it is tracked). ``device_post``: hole filling, the
    largest 3D component and the logits -> mask step run in torch on the model's device
    (:mod:`.postprocess`, the same masks as scipy), and tracked masks come back to the host
    ``copy_chunk`` slices per copy; off, they run in scipy/numpy one slice at a time.
    ``scheduler``: the device scheduler sessions submit encoder work to (None: each session
    calls the encoder itself, under ``lock``); see :meth:`start_scheduler`, which also makes
    ``lock`` a :class:`~segloop.engines.scheduler.DeviceLock` (model steps in priority order).
    ``sync_free``: no host<->device sync per tracked slice (frames uploaded once, memory bank
    kept on the device, object-pointer offsets made once, masks copied back asynchronously);
    ``compile``: the memory attention, prompt encoder, mask decoder and memory encoder of
    tracked slices run through ``torch.compile`` (CUDA graphs on CUDA); see :mod:`.faststep`.
    ``warm_heap``: on a CPU, freed memory stays in the heap while tracking (:mod:`.heap`).
    """

    model: Any
    model_name: str
    device: torch.device
    use_bf16: bool
    image_size: int
    window: str | tuple[float, float] | None
    largest_component: bool
    fill_holes: int
    cache_frames: int
    lock: threading.RLock | DeviceLock
    filter_key_slice: bool = False
    cache_mb: float = 256.0
    encode_batch: int = 1
    device_post: bool = False
    copy_chunk: int = 8
    scheduler: DeviceScheduler[torch.Tensor, SliceFeatures] | None = None
    sync_free: bool = False
    compile: bool = False
    warm_heap: bool = False

    @classmethod
    def load(cls, engine: Any) -> Runtime:
        """Load the engine's model (fp32 weights) on its device and resolve the precision."""
        from segloop.models.loader import load_model

        if engine.threads:
            torch.set_num_threads(int(engine.threads))
        dev_opt = engine.device_option
        if dev_opt == "auto":
            dev_opt = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device(dev_opt)
        if device.type == "cpu":
            bound_heap_growth()
        model = load_model(engine.model_name, device=device)
        if getattr(engine, "channels_last", False):
            use_channels_last(model)
        if engine.precision == "bf16":
            use_bf16 = True
        elif engine.precision == "fp32":
            use_bf16 = False
        else:
            use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        if use_bf16 and device.type == "cpu" and not _bf16_cpu_supported():
            log.info("bf16 is not accelerated on this CPU; running fp32")
            use_bf16 = False
        batch = getattr(engine, "encode_batch", None)
        post = getattr(engine, "device_post", None)
        cache_mb = getattr(engine, "cache_mb", None)
        sync_free = getattr(engine, "sync_free", None)
        rt = cls(
            model=model,
            model_name=engine.model_name,
            device=device,
            use_bf16=use_bf16,
            image_size=int(model.config.image_size),
            window=engine.window,
            largest_component=bool(engine.largest_component),
            # None: as MedSAM2, whose hole filling needs sam2's CUDA extension: 8 px on CUDA, off on CPU
            fill_holes=(int(engine.fill_holes) if engine.fill_holes is not None
                        else (8 if device.type == "cuda" else 0)),
            cache_frames=max(1, int(engine.cache_frames)),
            lock=engine.lock,
            filter_key_slice=bool(engine.filter_key_slice),
            cache_mb=float(cache_mb) if cache_mb is not None else default_cache_mb(device),
            encode_batch=max(1, int(batch)) if batch else default_encode_batch(device),
            device_post=bool(post) if post is not None else device.type != "cpu",
            # off unless asked: its CUDA path (pinned async copies) has not yet run on a GPU
            sync_free=bool(sync_free) if sync_free is not None else False,
            compile=bool(getattr(engine, "compile", False)),
            warm_heap=bool(getattr(engine, "warm_heap", False)),
        )
        if getattr(engine, "scheduler", False):
            sched_batch = getattr(engine, "scheduler_batch", None)
            rt.start_scheduler(int(sched_batch) if sched_batch else default_scheduler_batch(device),
                               float(getattr(engine, "scheduler_wait_ms", 3.0)) / 1000.0)
        return rt

    def __post_init__(self) -> None:
        memoise_position_encodings(self.model)
        memoise_rope(self.model)
        self.fast: FastStep = install_fast_step(self.model, self.device)

    def start_scheduler(self, max_batch: int, max_wait_s: float = 0.003) -> None:
        """Send every session's encoder work through one shared device scheduler, and hand the
        model to sessions' steps in priority order (call before sessions use the runtime)."""
        self.lock = DeviceLock()
        self.scheduler = DeviceScheduler(self.encode_parts, max_batch=max_batch,
                                         max_wait_s=max_wait_s,
                                         name=f"segloop-encoder-{self.model_name}")

    def encode_parts(self, parts: list[Sequence[torch.Tensor]]) -> list[SliceFeatures]:
        """Model inputs ``(3, S, S)`` float32 (several requests' slices, in order) -> their
        features, from one image-encoder call on the device (under ``lock``)."""
        rows = [x for part in parts for x in part]
        if not rows:
            return []
        batch = torch.stack(rows).to(self.device)
        # a shared batch serves every waiting session: it goes before their own steps
        with self.hold(Priority.INTERACTIVE), torch.inference_mode(), self.autocast():
            out = self.model.get_image_features(batch, return_dict=True)
        feats, pos = out.fpn_hidden_states, out.fpn_position_encoding
        # the position encodings are the same for every slice: views of the memo's tensors
        shared = [p[:, :1] for p in pos]
        return [SliceFeatures([f[:, j:j + 1].clone(memory_format=torch.contiguous_format)
                               for f in feats], shared) for j in range(len(rows))]

    def hold(self, priority: Priority) -> contextlib.AbstractContextManager[Any]:
        """The model lock for one step, queued at ``priority`` when it is a DeviceLock."""
        if isinstance(self.lock, DeviceLock):
            return self.lock.hold(priority)
        return self.lock

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast on the model's device when enabled, else nothing."""
        if not self.use_bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)
