"""The ``sammed3d`` engine: SAM-Med3D (uni-medical), a 3D ViT that segments 128³ patches at 1.5 mm.

Importing this module is cheap and torch-free, so ``segloop engines`` and ``--engine auto`` can
ask :meth:`SamMed3DEngine.unavailable_reason` without loading torch. The model (segloop's own
implementation, :mod:`segloop.engines.sammed3d.model`) loads on the first ``open()`` from the
cached official-layout checkpoint (``segloop models pull sam-med3d-turbo`` or
``segloop models import FILE --as sammed3d``), once per process, shared by all sessions; the
per-volume work lives in :mod:`segloop.engines.sammed3d.session`.

Concurrency: one model per engine instance; forward passes of all sessions are serialised by
the engine's lock. Must not import torch at module level, FastAPI, Celery or the CLI.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from typing import TYPE_CHECKING, ClassVar

from segloop.errors import ModelNotAvailableError
from segloop.io.volume import Volume
from segloop.models.registry import get_spec
from segloop.models.store import checkpoint_path, is_available, model_config, not_cached_message

if TYPE_CHECKING:  # imports torch: only for type checking here
    from segloop.engines.sammed3d.session import Runtime, SamMed3DSession

__all__ = ["DEFAULT_MODEL", "SamMed3DEngine"]

log = logging.getLogger(__name__)

#: the registry entry the engine loads by default (alias ``sammed3d``)
DEFAULT_MODEL = "sam-med3d-turbo"


class SamMed3DEngine:
    """SAM-Med3D behind segloop's slice protocol (see the session module for the prompt mapping).

    Options (``get_engine("sammed3d", **options)``):

    - ``model``: registry name (default ``sam-med3d-turbo``; a fine-tuned ``sammed3d@RUN``).
    - ``device``: ``"auto" | "cpu" | "cuda[:i]"``.
    - ``precision``: ``"auto" | "fp32" | "bf16"``; auto = bf16 autocast on CUDA, fp32 on CPU
      (default from ``SEGLOOP_SAMMED3D_PRECISION``).
    - ``max_tiles``: patches one object may use (1 = the official single 128³ patch); default 8.
    - ``threads``: torch CPU threads.
    """

    name: ClassVar[str] = "sammed3d"
    description: ClassVar[str] = (
        "SAM-Med3D (3D ViT-B, 128³ patches at 1.5 mm): 3D clicks, whole-object result at once"
    )

    def __init__(self, model: str | None = None, device: str = "auto",
                 precision: str | None = None, max_tiles: int = 8,
                 threads: int | None = None) -> None:
        self.model_name = get_spec(model or DEFAULT_MODEL).name
        if precision is None:
            precision = os.environ.get("SEGLOOP_SAMMED3D_PRECISION", "").strip().lower() or "auto"
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
        if int(max_tiles) < 1:
            raise ValueError(f"max_tiles must be at least 1, got {max_tiles}")
        self.device_option = device
        self.precision = precision
        self.max_tiles = int(max_tiles)
        self.threads = threads
        self.lock = threading.RLock()
        self._runtime: Runtime | None = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None when torch is installed and SAM-Med3D weights are cached."""
        if importlib.util.find_spec("torch") is None:
            return "the torch package is not installed (pip install -e '.[sam2]' in the segloop checkout)"
        if is_available(DEFAULT_MODEL):
            return None
        return not_cached_message("sammed3d")

    def runtime(self) -> Runtime:
        """The loaded model and its settings (loaded on first call, then shared)."""
        with self.lock:
            if self._runtime is None:
                if not is_available(self.model_name):
                    raise ModelNotAvailableError(
                        f"{self.model_name}: {not_cached_message(self.model_name)}")
                import torch

                from segloop.engines.sammed3d.convert import load_model_file
                from segloop.engines.sammed3d.model import SamMed3DConfig
                from segloop.engines.sammed3d.session import Runtime as _Runtime

                if self.threads:
                    torch.set_num_threads(int(self.threads))
                dev = self.device_option
                if dev == "auto":
                    dev = "cuda" if torch.cuda.is_available() else "cpu"
                device = torch.device(dev)
                cfg = SamMed3DConfig.from_dict(model_config(self.model_name))
                model = load_model_file(checkpoint_path(self.model_name), cfg, device)
                use_bf16 = (self.precision == "bf16"
                            or (self.precision == "auto" and device.type == "cuda"
                                and torch.cuda.is_bf16_supported()))
                self._runtime = _Runtime(model=model, device=device, use_bf16=use_bf16,
                                         max_tiles=self.max_tiles, lock=self.lock)
                log.info("sammed3d: %s loaded on %s (bf16=%s)", self.model_name, device, use_bf16)
            return self._runtime

    def open(self, volume: Volume) -> SamMed3DSession:
        """A :class:`~segloop.engines.sammed3d.session.SamMed3DSession` on ``volume``."""
        from segloop.engines.sammed3d.session import SamMed3DSession as _Session

        return _Session(self.runtime(), volume)
