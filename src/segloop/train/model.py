"""The model side of training: build or load a Sam2VideoModel, choose what trains, run a clip.

:func:`load_base_model` gives the starting weights (a cached registry model, or a tiny random
configuration). :func:`set_trainable` freezes everything except the chosen :class:`Part` s.
:func:`forward_clip` runs one clip with gradients, the way the ``medsam2`` engine runs a
propagation: frame 0 is a conditioning frame with point/box inputs, the next frames are tracked
through the memory bank (memory attention over the earlier frames' encoded masks and object
pointers). It calls the per-frame steps of ``transformers``' Sam2VideoModel directly, because its
``forward`` runs under ``torch.inference_mode`` (tested with transformers 5.23). The model stays
in eval mode (no dropout), so a trained model behaves in the engine exactly as in training.
Inputs are made with the sam2 engine's preprocessing (:mod:`segloop.engines.sam2.preprocess`).

Imports torch and transformers; must not import the API, the jobs layer or the CLI.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from segloop.engines.sam2.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    prompt_points,
    slice_to_model_input,
)
from segloop.errors import ModelNotAvailableError
from segloop.train.config import Part
from segloop.train.records import PromptSample

__all__ = [
    "PART_MODULES",
    "FrameOutput",
    "enable_gradient_checkpointing",
    "forward_clip",
    "frames_to_tensor",
    "load_base_model",
    "prompt_inputs",
    "resolve_device",
    "set_trainable",
    "truth_to_tensor",
]

log = logging.getLogger(__name__)

#: top-level names (sub-modules or parameters) of Sam2VideoModel in each part
PART_MODULES: dict[Part, tuple[str, ...]] = {
    Part.IMAGE_ENCODER: ("vision_encoder",),
    Part.PROMPT_ENCODER: ("prompt_encoder",),
    Part.MASK_DECODER: ("mask_decoder",),
    Part.MEMORY: ("memory_attention", "memory_encoder", "mask_downsample", "object_pointer_proj",
                  "temporal_positional_encoding_projection_layer", "no_memory_embedding",
                  "no_memory_positional_encoding", "memory_temporal_positional_encoding",
                  "no_object_pointer", "occlusion_spatial_embedding_parameter"),
}


def resolve_device(option: str = "auto") -> torch.device:
    """``auto``: cuda, then Apple mps, then cpu; otherwise the named device."""
    if option == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(option)


def load_base_model(name: str, image_size: int, device: torch.device, seed: int = 0
                    ) -> tuple[Any, dict[str, Any], str]:
    """The starting model, its ``Sam2VideoConfig`` kwargs and its resolved registry name.

    ``name="tiny"``: a tiny random configuration at ``image_size`` px (seeded). Otherwise a
    cached registry model (ModelNotAvailableError with the pull/import hint when absent).
    """
    from segloop.models.configs import tiny_config
    from segloop.models.loader import build_model, load_model
    from segloop.models.registry import get_spec
    from segloop.models.store import is_available, model_config, not_cached_message

    if name == "tiny":
        cfg = tiny_config(image_size)
        torch.manual_seed(seed)
        return build_model(cfg, device=device), cfg, "tiny"
    spec = get_spec(name)
    if not is_available(spec.name):
        raise ModelNotAvailableError(
            f"{spec.name}: {not_cached_message(name)} (or train from a tiny random model with"
            " --model tiny / --smoke)"
        )
    model = load_model(spec.name, device=device)
    return model, model_config(spec.name), spec.name


def _named_part_params(model: Any, part: Part) -> list[tuple[str, torch.nn.Parameter]]:
    out: list[tuple[str, torch.nn.Parameter]] = []
    for attr in PART_MODULES[part]:
        obj = getattr(model, attr, None)
        if isinstance(obj, torch.nn.Parameter):
            out.append((attr, obj))
        elif isinstance(obj, torch.nn.Module):
            out += [(f"{attr}.{n}", p) for n, p in obj.named_parameters()]
    return out


def set_trainable(model: Any, parts: Sequence[Part]) -> tuple[int, int]:
    """Freeze every parameter except those of ``parts``; returns (trainable, total) counts."""
    for p in model.parameters():
        p.requires_grad_(False)
    for part in parts:
        for _, p in _named_part_params(model, part):
            p.requires_grad_(True)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())
    return n_train, n_total


def enable_gradient_checkpointing(model: Any) -> int:
    """Recompute the transformer blocks' activations in the backward pass; returns how many.

    The model supports it per layer (transformers' ``GradientCheckpointingLayer``) but runs in
    eval mode here, so only the checkpointed layer objects are flagged as training (their
    children, e.g. dropout, stay in eval mode).
    """
    from torch.utils.checkpoint import checkpoint
    from transformers.modeling_layers import GradientCheckpointingLayer

    n = 0
    for mod in model.modules():
        if isinstance(mod, GradientCheckpointingLayer):
            mod.gradient_checkpointing = True
            setattr(mod, "_gradient_checkpointing_func",  # noqa: B010 (typed as a Module attr)
                    functools.partial(checkpoint, use_reentrant=False))
            mod.training = True
            n += 1
    return n


def _rgb_to_model_input(img: npt.NDArray[np.uint8], size: int) -> npt.NDArray[np.float32]:
    """An ``(H, W, 3)`` uint8 image as ``(3, size, size)`` float32, as for grey slices."""
    from PIL import Image

    resized = Image.fromarray(np.ascontiguousarray(img)).resize((size, size),
                                                               Image.Resampling.BICUBIC)
    arr = np.asarray(resized, dtype=np.float32) / np.float32(255.0)
    out = (arr - IMAGENET_MEAN[None, None, :]) / IMAGENET_STD[None, None, :]
    return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32)


def frames_to_tensor(frames: npt.NDArray[np.uint8], size: int) -> torch.Tensor:
    """uint8 ``(T, H, W)`` or ``(T, H, W, 3)`` frames -> float32 ``(T, 3, size, size)`` inputs."""
    conv = _rgb_to_model_input if frames.ndim == 4 else slice_to_model_input
    return torch.from_numpy(np.stack([conv(f, size) for f in frames]))


def truth_to_tensor(truth: npt.NDArray[np.bool_], size: int) -> torch.Tensor:
    """bool ``(T, H, W)`` -> float32 ``(T, 1, size, size)`` 0/1 (nearest-neighbour)."""
    t = torch.from_numpy(np.ascontiguousarray(truth, dtype=np.float32))[:, None]
    return F.interpolate(t, size=(size, size), mode="nearest")


def prompt_inputs(prompt: PromptSample, height: int, width: int, size: int
                  ) -> dict[str, torch.Tensor]:
    """Box corners (labels 2, 3) then points, in model pixels: coords (1,1,N,2), labels (1,1,N)."""
    coords, labels = prompt_points(prompt.box, prompt.points, prompt.labels,
                                   size / width, size / height)
    return {"point_coords": torch.from_numpy(coords), "point_labels": torch.from_numpy(labels)}


@dataclass
class FrameOutput:
    """The model's prediction on one frame of a clip.

    logits: ``(1, 1, S, S)`` mask logits at model resolution; iou: predicted IoU (scalar);
    object_logit: the object-presence logit (scalar).
    """

    logits: torch.Tensor
    iou: torch.Tensor
    object_logit: torch.Tensor


def forward_clip(model: Any, frames: torch.Tensor, inputs: dict[str, torch.Tensor],
                 device: torch.device) -> list[FrameOutput]:
    """Run a clip ``(T, 3, S, S)``: frame 0 prompted by ``inputs``, the rest tracked by memory.

    Gradients flow wherever parameters require them (call under ``torch.no_grad`` to evaluate).
    """
    from transformers import Sam2VideoInferenceSession

    size = int(frames.shape[-1])
    vs = Sam2VideoInferenceSession(
        video=None, video_height=size, video_width=size, inference_device=device,
        inference_state_device=device, video_storage_device=device, dtype=torch.float32,
    )
    vs.processed_frames = {t: frames[t].to(device) for t in range(int(frames.shape[0]))}
    obj = vs.obj_id_to_idx(1)
    point_inputs = {k: v.to(device) for k, v in inputs.items()}
    outs: list[FrameOutput] = []
    for t in range(int(frames.shape[0])):
        init = t == 0
        pts = point_inputs if init else None
        feats, pos = model._prepare_vision_features(vs, t, 1)
        high_res = [x.permute(1, 2, 0).view(x.size(1), x.size(2), *s)
                    for x, s in zip(feats[:-1], model.backbone_feature_sizes[:-1], strict=False)]
        pix = model._prepare_memory_conditioned_features(
            inference_session=vs, frame_idx=t, obj_idx=obj, is_initial_conditioning_frame=init,
            current_vision_features=feats[-1], current_vision_positional_embeddings=pos[-1],
            num_total_frames=vs.num_frames, track_in_reverse_time=False, streaming=False,
        )
        multimask = model._use_multimask(init, pts)
        sam = model._single_frame_forward(
            pixel_values=None,
            input_points=pts["point_coords"] if pts is not None else None,
            input_labels=pts["point_labels"] if pts is not None else None,
            image_embeddings=[*high_res, pix], multimask_output=multimask,
        )
        scores = sam.iou_scores.reshape(-1)
        iou = scores.max() if multimask else scores[0]
        vs.store_output(obj, t, output_value={
            "pred_masks": sam.pred_masks, "object_pointer": sam.object_pointer,
            "high_res_masks": sam.high_res_masks,
            "object_score_logits": sam.object_score_logits,
        }, is_conditioning_frame=init)
        if not init:
            vs.frames_tracked_per_obj[obj][t] = {"reverse": False}
        if int(frames.shape[0]) > 1 and model.num_maskmem > 0:
            model._batch_encode_memories(
                inference_session=vs, frame_idx=t, objects_needing_memory_encoding=[obj],
                high_res_masks_for_memory=[sam.high_res_masks],
                object_score_logits_for_memory=[sam.object_score_logits],
                is_mask_from_pts_per_obj=[pts is not None],
            )
        outs.append(FrameOutput(logits=sam.high_res_masks.reshape(1, 1, size, size),
                                iou=iou, object_logit=sam.object_score_logits.reshape(-1)[0]))
    return outs
