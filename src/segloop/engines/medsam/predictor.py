"""MedSAM (SAM v1) forward passes through ``transformers``' ``SamModel`` (imports torch).

:class:`MedSAMPredictor` holds a loaded model: :meth:`~MedSAMPredictor.encode` turns one image
into its embedding (the expensive part, once per image), :meth:`~MedSAMPredictor.predict`
decodes a box and/or points against an embedding and returns MedSAM's probabilities at the
image's own size (see :mod:`.preprocess` for the exact rules). Decoding runs through
:mod:`.fast_decode` with the image's prompt-independent part computed once at encoding
(:meth:`~MedSAMPredictor.reference_logits_and_score` keeps ``SamModel``'s own forward, for
tests and the benchmark). Calls are serialised by the predictor's lock (one model per process).
Must not import FastAPI, Celery or the CLI.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from segloop.engines.medsam.fast_decode import DecodeCache, decode, prepare
from segloop.engines.medsam.preprocess import image_to_model_input, scale_box, scale_points
from segloop.types import Prompts

__all__ = ["Embedding", "MedSAMPredictor"]


@dataclass(frozen=True)
class Embedding:
    """One encoded image: ``features`` ``(1, C, s, s)``, the image's ``(height, width)`` and
    the decoder's per-image part (:func:`.fast_decode.prepare`; None: computed per call)."""

    features: torch.Tensor
    height: int
    width: int
    cache: DecodeCache | None = None


@dataclass
class MedSAMPredictor:
    """A loaded ``SamModel`` with MedSAM's rules. ``image_size``: model input size (1024)."""

    model: Any
    device: torch.device
    image_size: int
    lock: threading.RLock = field(default_factory=threading.RLock)

    def encode(self, pixels: npt.NDArray[Any]) -> Embedding:
        """Embed ``(H, W)`` or ``(H, W, 3)`` uint8 pixels (MedSAM's preprocessing)."""
        arr = image_to_model_input(pixels, self.image_size)
        x = torch.from_numpy(arr)[None].to(self.device)
        with self.lock, torch.inference_mode():
            feats = self.model.get_image_embeddings(x)
            cache = prepare(self.model, feats)
        return Embedding(features=feats, height=int(pixels.shape[0]), width=int(pixels.shape[1]),
                         cache=cache)

    def logits(self, emb: Embedding, prompts: Prompts) -> torch.Tensor:
        """The low-resolution logits ``(1, 1, s/4, s/4)`` (256² at 1024) for ``prompts``."""
        return self.logits_and_score(emb, prompts)[0]

    def _prompt_kwargs(self, emb: Embedding, prompts: Prompts) -> dict[str, torch.Tensor]:
        kwargs: dict[str, torch.Tensor] = {}
        h, w, s = emb.height, emb.width, self.image_size
        if prompts.box is not None:
            box = scale_box(prompts.box, h, w, s)
            kwargs["input_boxes"] = torch.as_tensor(box, dtype=torch.float32, device=self.device)[None, None]
        if prompts.points.shape[0]:
            pts = scale_points(prompts.points, h, w, s)
            kwargs["input_points"] = torch.as_tensor(pts, dtype=torch.float32,
                                                     device=self.device)[None, None]
            kwargs["input_labels"] = torch.as_tensor(prompts.labels, dtype=torch.int64,
                                                     device=self.device)[None, None]
        return kwargs

    def logits_and_score(self, emb: Embedding, prompts: Prompts) -> tuple[torch.Tensor, float]:
        """:meth:`logits` and the model's predicted IoU of that mask (SAM's IoU head)."""
        kwargs = self._prompt_kwargs(emb, prompts)
        with self.lock, torch.inference_mode():
            cache = emb.cache if emb.cache is not None else prepare(self.model, emb.features)
            sparse, _ = self.model.prompt_encoder(
                input_points=kwargs.get("input_points"), input_labels=kwargs.get("input_labels"),
                input_boxes=kwargs.get("input_boxes"), input_masks=None)
            low, score = decode(self.model, cache, sparse)
        return low.float(), score

    def reference_logits_and_score(self, emb: Embedding, prompts: Prompts
                                   ) -> tuple[torch.Tensor, float]:
        """:meth:`logits_and_score` through ``SamModel``'s own forward (slower, same values)."""
        kwargs = self._prompt_kwargs(emb, prompts)
        with self.lock, torch.inference_mode():
            out = self.model(image_embeddings=emb.features, multimask_output=False, **kwargs)
        low: torch.Tensor = out.pred_masks[:, 0, :1].float()  # (1, 1, 256, 256)
        return low, float(out.iou_scores[0, 0, 0])

    def predict_scored(self, emb: Embedding, prompts: Prompts
                       ) -> tuple[npt.NDArray[np.bool_], float]:
        """:meth:`predict` and the model's predicted IoU of the mask."""
        low, score = self.logits_and_score(emb, prompts)
        up = F.interpolate(torch.sigmoid(low), size=(emb.height, emb.width), mode="bilinear",
                           align_corners=False)
        return up[0, 0].cpu().numpy() > 0.5, score

    def probabilities(self, emb: Embedding, prompts: Prompts) -> npt.NDArray[np.float32]:
        """MedSAM's probabilities ``(H, W)`` float32: sigmoid, bilinear upsampling to the image."""
        low = torch.sigmoid(self.logits(emb, prompts))
        up = F.interpolate(low, size=(emb.height, emb.width), mode="bilinear", align_corners=False)
        return up[0, 0].cpu().numpy().astype(np.float32)

    def predict(self, emb: Embedding, prompts: Prompts) -> npt.NDArray[np.bool_]:
        """The ``(H, W)`` mask: probabilities above 0.5 (MedSAM's threshold)."""
        return self.probabilities(emb, prompts) > 0.5
