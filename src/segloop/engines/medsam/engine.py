"""The ``medsam`` engine (MedSAM v1: SAM ViT-B fine-tuned for medical images, 1024 px).

Importing this module is cheap and torch-free, so ``segloop engines`` and ``--engine auto``
can ask :meth:`MedSAMEngine.unavailable_reason` without torch. The model is loaded on first
use (once per engine instance, shared by its sessions; forward passes are serialised by the
predictor's lock). Volumes: :class:`~segloop.engines.medsam.session.MedSAMSession`; 2D
images: :meth:`MedSAMEngine.segment_image` (RGB reaches the model as RGB).
Must not import torch at module level, FastAPI, Celery or the CLI.
"""

from __future__ import annotations

import importlib.util
import threading
from typing import TYPE_CHECKING, Any, ClassVar

import numpy.typing as npt

from segloop.errors import ModelNotAvailableError
from segloop.io.volume import Volume
from segloop.models.registry import get_spec
from segloop.models.store import is_available, not_cached_message
from segloop.types import BoolArray, Prompts

if TYPE_CHECKING:
    from segloop.engines.medsam.predictor import MedSAMPredictor
    from segloop.engines.medsam.session import MedSAMSession

__all__ = ["MedSAMEngine"]

#: registry models tried in order when no ``model`` option is given
CANDIDATES: tuple[str, ...] = ("medsam-vit-b", "medsam-vit-base")


class MedSAMEngine:
    """MedSAM v1 through ``transformers``' SamModel.

    Options: ``model`` (registry name, default the first cached of medsam-vit-b,
    medsam-vit-base), ``device`` (``"auto" | "cpu" | "cuda[:i]"``), ``window`` (CT window for
    volumes, as the SAM 2 engines), ``margin`` (px added around the neighbour's mask box),
    ``min_area`` / ``stop_ratio`` (propagation stop rule), ``cache_frames`` (embeddings kept
    per session), ``threads`` (torch CPU threads).
    """

    name: ClassVar[str] = "medsam"
    description: ClassVar[str] = (
        "MedSAM v1 (SAM ViT-B, 1024 px): box a slice or a 2D image; slice-by-slice box propagation"
    )

    def __init__(self, model: str | None = None, device: str = "auto",
                 window: str | tuple[float, float] | None = "auto", margin: int = 5,
                 min_area: int = 10, stop_ratio: float = 0.2, cache_frames: int = 16,
                 threads: int | None = None) -> None:
        name = model or next((n for n in CANDIDATES if is_available(n)), CANDIDATES[0])
        self.model_name = get_spec(name).name
        self.device_option = device
        self.window = window
        self.margin, self.min_area, self.stop_ratio = int(margin), int(min_area), float(stop_ratio)
        self.cache_frames = int(cache_frames)
        self.threads = threads
        self._lock = threading.Lock()
        self._predictor: MedSAMPredictor | None = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None when torch/transformers are installed and MedSAM weights are cached."""
        for pkg in ("torch", "transformers"):
            if importlib.util.find_spec(pkg) is None:
                return f"the {pkg} package is not installed (pip install -e '.[sam2]')"
        if any(is_available(n) for n in CANDIDATES):
            return None
        return ("weights not cached: run `segloop models import medsam_vit_b.pth --as medsam`"
                " (MedSAM's own file) or `segloop models pull medsam-vit-base`")

    def predictor(self) -> MedSAMPredictor:
        """The loaded model (loaded on first call, then shared)."""
        with self._lock:
            if self._predictor is None:
                if not is_available(self.model_name):
                    raise ModelNotAvailableError(f"{self.model_name}: {not_cached_message(self.model_name)}")
                import torch

                from segloop.engines.medsam.predictor import MedSAMPredictor as _Predictor
                from segloop.models.sam_v1 import load_sam_model

                if self.threads:
                    torch.set_num_threads(int(self.threads))
                dev = self.device_option
                if dev == "auto":
                    dev = "cuda" if torch.cuda.is_available() else "cpu"
                model = load_sam_model(self.model_name, device=dev)
                size = int(model.config.vision_config.image_size)
                self._predictor = _Predictor(model=model, device=torch.device(dev), image_size=size)
            return self._predictor

    def open(self, volume: Volume) -> MedSAMSession:
        """A session on ``volume`` (its canonical view)."""
        from segloop.engines.medsam.session import MedSAMSession as _Session
        from segloop.engines.medsam.session import PropagationRule

        rule = PropagationRule(self.margin, self.min_area, self.stop_ratio)
        return _Session(self.predictor(), volume, rule=rule, window=self.window,
                        cache_frames=self.cache_frames)

    def segment_image(self, pixels: npt.NDArray[Any], prompts: Prompts,
                      spacing: tuple[float, float] | None = None) -> BoolArray:
        """Segment a 2D image: ``(H, W)`` or ``(H, W, 3)`` pixels, prompts in (x = column,
        y = row) pixels; returns the ``(H, W)`` mask. uint8 pixels go to MedSAM as they are;
        others are scaled to uint8 first (see ``to_uint8_image``)."""
        del spacing  # MedSAM resizes every image to 1024 px: spacing plays no part
        return self.decode_image(self.encode_image(pixels), prompts)

    def encode_image(self, pixels: npt.NDArray[Any]) -> Any:
        """The image embedding of ``(H, W)`` / ``(H, W, 3)`` pixels (a 2D job keeps it, so a
        second box or a correction only decodes)."""
        from segloop.engines.image2d import to_uint8_image

        return self.predictor().encode(to_uint8_image(pixels, None, self.window))

    def segment_image_scored(self, pixels: npt.NDArray[Any], prompts: Prompts,
                             spacing: tuple[float, float] | None = None
                             ) -> tuple[BoolArray, float]:
        """:meth:`segment_image` and MedSAM's predicted IoU of the mask (``--compare-with``)."""
        del spacing
        mask, score = self.predictor().predict_scored(self.encode_image(pixels), prompts)
        return mask, score

    def decode_image(self, encoding: Any, prompts: Prompts) -> BoolArray:
        """The ``(H, W)`` mask of ``prompts`` (x = column, y = row) on an encoded image."""
        mask: BoolArray = self.predictor().predict(encoding, prompts)
        return mask
