"""The ``medsam2`` and ``sam2.1-*`` engines: classes the registry loads by entry point.

Importing this module is cheap and torch-free, so ``segloop engines`` and ``--engine auto``
can ask :meth:`unavailable_reason` without loading torch (the API process never imports it).
The model is loaded on the first ``open()`` (once per process, shared by all sessions); the
work itself lives in :mod:`segloop.engines.sam2.session`.

Concurrency: one model per engine instance; forward passes of all sessions are serialised by
the engine's lock (one GPU, bounded memory), while sessions keep their own per-volume state.
With ``scheduler`` on, the image encoder of all sessions runs in shared batches on one device
thread (interactive slices first, then propagation chunks round-robin by user); the tracking
steps stay per session, under the lock.
Must not import torch at module level, FastAPI, Celery or the CLI.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, ClassVar

import numpy.typing as npt

from segloop.errors import ModelNotAvailableError
from segloop.io.volume import Volume
from segloop.models.registry import MEDSAM2_VARIANTS, get_spec
from segloop.models.store import is_available, not_cached_message
from segloop.types import BoolArray, Prompts

if TYPE_CHECKING:  # the session module imports torch: only for type checking here
    from segloop.engines.sam2.session import Runtime, Sam2Session

__all__ = [
    "MedSAM2Engine",
    "Sam2Engine",
    "Sam21BasePlusEngine",
    "Sam21LargeEngine",
    "Sam21SmallEngine",
    "Sam21TinyEngine",
]

log = logging.getLogger(__name__)


def _missing_packages() -> str | None:
    for pkg in ("torch", "transformers"):
        if importlib.util.find_spec(pkg) is None:
            return f"the {pkg} package is not installed (pip install -e '.[sam2]' in the segloop checkout)"
    return None


class Sam2Engine:
    """Base of the SAM 2-family engines (a ``transformers`` Sam2VideoModel under the hood).

    Options (``get_engine(name, **options)``):

    - ``model`` (or ``variant``): registry name; default the engine's (for ``medsam2`` the
      first cached of MedSAM2_latest, MedSAM2_2411, ...).
    - ``device``: ``"auto" | "cpu" | "cuda[:i]"``.
    - ``precision``: ``"auto" | "fp32" | "bf16"``; auto = bf16 autocast on CUDA, fp32 on CPU;
      default from ``SEGLOOP_SAM2_PRECISION``; bf16 on a CPU without bf16 support runs fp32.
    - ``window``: CT window (preset, ``"L,W"``, ``(lower, upper)`` or ``"auto"``); a volume's
      ``meta["window"]`` wins.
    - ``largest_component``: keep the largest 3D component after propagation (MedSAM2).
    - ``filter_key_slice``: let that filter also cut the model-made mask of the slice a
      propagation starts from, exactly as MedSAM2 (default); False keeps that slice as
      ``segment_slice`` returned it.
    - ``fill_holes``: SAM 2's hole filling, background blobs up to this many pixels of the
      low-resolution logits become foreground; 0 = off. Default None does what MedSAM2 does:
      8 on CUDA (sam2's CUDA extension), off on a CPU (where sam2 skips it).
    - ``cache_frames`` / ``cache_mb``: image embeddings kept per session, by count and by
      bytes (default None: 256 MB on an accelerator, 64 MB = 16 slices at 512 px on a CPU);
      ``threads``: torch CPU threads.
    - ``encode_batch``: slices encoded per image-encoder call ahead of tracking; default None:
      16 on an accelerator, 1 on a CPU; 1 encodes each slice when it is tracked.
    - ``device_post``: hole filling, the largest 3D component and the masks in torch on the
      model's device, tracked masks copied back in chunks (the same masks as the scipy path);
      default None: on an accelerator, off on a CPU.
    - ``scheduler``: share the device among sessions: every session's image-encoder work goes
      through one scheduler thread that batches concurrent sessions' slices, 2D prompts first,
      propagation chunks round-robin by user (:mod:`segloop.engines.scheduler`); default None
      reads ``SEGLOOP_SAM2_SCHEDULER`` (``1``/``on``), else off. ``scheduler_batch``: slices per
      shared batch (None: 32 on an accelerator, 4 on a CPU); ``scheduler_wait_ms``: how long a
      batch that is not full waits for other users' slices (only while others are active).
    - ``sync_free``: no host sync per tracked slice (frames uploaded once, the memory bank on
      the device, masks copied back asynchronously; the same masks); default off until a
      GPU run has confirmed its CUDA path (never run on CUDA yet). ``compile``:
      ``torch.compile`` (CUDA graphs on CUDA) of the memory attention, prompt encoder, mask
      decoder and memory encoder while tracking; default off (the first propagation pays the
      compilation). See :mod:`segloop.engines.sam2.faststep`.
    - ``channels_last``: convolution weights in channels-last order (oneDNN's layout), opt-in:
      the image encoder took ~15 % less CPU time on a loaded 2-core machine, features within
      1e-7 of the default (docs/speed.md); default False.
    - ``warm_heap``: on a CPU, keep freed memory in the heap while a propagation tracks, so a
      slice's activations reuse the previous slice's pages instead of faulting in fresh ones
      (:mod:`segloop.engines.sam2.heap`); the same masks, less CPU time, but ~120 MB more peak
      RSS at 512 px (heap fragmentation), which breaks the 1 GB bound: default False.
    """

    name: ClassVar[str] = "sam2"
    description: ClassVar[str] = "SAM 2 family"
    #: scales CT with the window (io.windowing.CT_PRESETS, MedSAM2's rule); see engines.base
    applies_window: ClassVar[bool] = True
    default_model: ClassVar[str] = "sam2.1-tiny"
    candidate_models: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        model: str | None = None,
        variant: str | None = None,
        device: str = "auto",
        precision: str | None = None,
        window: str | tuple[float, float] | None = "auto",
        largest_component: bool = True,
        filter_key_slice: bool = True,
        fill_holes: int | None = None,
        cache_frames: int = 32,
        threads: int | None = None,
        cache_mb: float | None = None,
        encode_batch: int | None = None,
        device_post: bool | None = None,
        scheduler: bool | None = None,
        scheduler_batch: int | None = None,
        scheduler_wait_ms: float = 3.0,
        sync_free: bool | None = None,
        compile: bool = False,
        channels_last: bool = False,
        warm_heap: bool = False,
    ) -> None:
        name = model or variant or self._first_cached()
        self.model_name = get_spec(name).name
        if precision is None:
            precision = os.environ.get("SEGLOOP_SAM2_PRECISION", "").strip().lower() or "auto"
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
        self.device_option = device
        self.precision = precision
        self.window = window
        self.largest_component = largest_component
        self.filter_key_slice = filter_key_slice
        self.fill_holes = None if fill_holes is None else int(fill_holes)
        self.cache_frames = int(cache_frames)
        self.cache_mb = None if cache_mb is None else float(cache_mb)
        self.encode_batch = None if encode_batch is None else int(encode_batch)
        self.device_post = device_post
        if scheduler is None:
            env = os.environ.get("SEGLOOP_SAM2_SCHEDULER", "").strip().lower()
            if env not in ("", "0", "off", "false", "no", "1", "on", "true", "yes"):
                raise ValueError(f"SEGLOOP_SAM2_SCHEDULER must be on or off, got {env!r}")
            scheduler = env in ("1", "on", "true", "yes")
        self.scheduler = bool(scheduler)
        self.scheduler_batch = None if scheduler_batch is None else int(scheduler_batch)
        if self.scheduler_batch is not None and self.scheduler_batch < 1:
            raise ValueError(f"scheduler_batch must be at least 1, got {scheduler_batch}")
        self.scheduler_wait_ms = float(scheduler_wait_ms)
        self.sync_free = sync_free
        self.compile = bool(compile)
        self.channels_last = bool(channels_last)
        self.warm_heap = bool(warm_heap)
        self.threads = threads
        self.lock = threading.RLock()
        self._runtime: Runtime | None = None
        self._image_predictor: Any = None  # Sam2ImagePredictor, built on the first 2D image

    @classmethod
    def _first_cached(cls) -> str:
        for name in (cls.default_model, *cls.candidate_models):
            if is_available(name):
                return name
        return cls.default_model

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None when torch/transformers are installed and weights of a model are cached."""
        missing = _missing_packages()
        if missing:
            return missing
        if any(is_available(n) for n in (cls.default_model, *cls.candidate_models)):
            return None
        alias = get_spec(cls.default_model).aliases
        return not_cached_message(alias[0] if alias else cls.default_model)

    def runtime(self) -> Runtime:
        """The loaded model and its settings (loaded on first call, then shared)."""
        with self.lock:
            if self._runtime is None:
                if not is_available(self.model_name):
                    raise ModelNotAvailableError(
                        f"{self.model_name}: {not_cached_message(self.model_name)}"
                    )
                from segloop.engines.sam2.session import Runtime as _Runtime

                self._runtime = _Runtime.load(self)
            return self._runtime

    def segment_image(self, pixels: npt.NDArray[Any], prompts: Prompts,
                      spacing: tuple[float, float] | None = None) -> BoolArray:
        """Segment a 2D image with the image-predictor path of the same weights (no memory):
        ``(H, W)`` or ``(H, W, 3)`` pixels, prompts in (x = column, y = row); ``(H, W)`` mask.
        See :mod:`segloop.engines.sam2.image2d`."""
        del spacing  # resized to the model size: spacing plays no part
        return self.decode_image(self.encode_image(pixels), prompts)

    def _image_pred(self) -> Any:
        from segloop.engines.sam2.image2d import Sam2ImagePredictor

        with self.lock:
            if self._image_predictor is None:
                if not is_available(self.model_name):
                    raise ModelNotAvailableError(
                        f"{self.model_name}: {not_cached_message(self.model_name)}")
                self._image_predictor = Sam2ImagePredictor.load(self.model_name, self.runtime().device.type)
            return self._image_predictor

    def encode_image(self, pixels: npt.NDArray[Any]) -> Any:
        """The image-predictor encoding of ``(H, W)`` / ``(H, W, 3)`` pixels (a 2D job keeps
        it, so a correction only decodes)."""
        from segloop.engines.image2d import to_uint8_image

        return self._image_pred().encode(to_uint8_image(pixels))

    def segment_image_scored(self, pixels: npt.NDArray[Any], prompts: Prompts,
                             spacing: tuple[float, float] | None = None
                             ) -> tuple[BoolArray, float]:
        """:meth:`segment_image` and the model's predicted IoU of the chosen mask."""
        del spacing
        mask, score = self._image_pred().predict(self.encode_image(pixels), prompts)
        return mask, float(score)

    def decode_image(self, encoding: Any, prompts: Prompts) -> BoolArray:
        """The ``(H, W)`` mask of ``prompts`` (x = column, y = row) on an encoded image."""
        mask: BoolArray = self._image_pred().predict(encoding, prompts)[0]
        return mask

    def open(self, volume: Volume) -> Sam2Session:
        """A :class:`~segloop.engines.sam2.session.Sam2Session` on ``volume`` (canonical view)."""
        from segloop.engines.sam2.session import Sam2Session as _Session

        return _Session(self.runtime(), volume)


class MedSAM2Engine(Sam2Engine):
    """MedSAM2 (bowang-lab): SAM 2.1 hiera-tiny fine-tuned on 3D medical images, 512 px."""

    name: ClassVar[str] = "medsam2"
    description: ClassVar[str] = (
        "MedSAM2 (SAM 2.1 hiera-tiny, 512 px): box a slice, memory propagation both ways"
    )
    default_model: ClassVar[str] = MEDSAM2_VARIANTS[0]
    candidate_models: ClassVar[tuple[str, ...]] = MEDSAM2_VARIANTS[1:]


class Sam21TinyEngine(Sam2Engine):
    """SAM 2.1 hiera-tiny at 1024 px."""

    name: ClassVar[str] = "sam2.1-tiny"
    description: ClassVar[str] = "SAM 2.1 hiera-tiny (Meta, 1024 px) with video propagation"
    default_model: ClassVar[str] = "sam2.1-tiny"


class Sam21SmallEngine(Sam2Engine):
    """SAM 2.1 hiera-small at 1024 px."""

    name: ClassVar[str] = "sam2.1-small"
    description: ClassVar[str] = "SAM 2.1 hiera-small (Meta, 1024 px) with video propagation"
    default_model: ClassVar[str] = "sam2.1-small"


class Sam21BasePlusEngine(Sam2Engine):
    """SAM 2.1 hiera-base-plus at 1024 px."""

    name: ClassVar[str] = "sam2.1-base-plus"
    description: ClassVar[str] = "SAM 2.1 hiera-base+ (Meta, 1024 px) with video propagation"
    default_model: ClassVar[str] = "sam2.1-base-plus"


class Sam21LargeEngine(Sam2Engine):
    """SAM 2.1 hiera-large at 1024 px."""

    name: ClassVar[str] = "sam2.1-large"
    description: ClassVar[str] = "SAM 2.1 hiera-large (Meta, 1024 px) with video propagation"
    default_model: ClassVar[str] = "sam2.1-large"
