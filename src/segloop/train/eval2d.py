"""2D evaluation on image/mask folders: mean IoU (and Dice) per model, side by side.

The polyp-style comparison: every image of a folder (its ``val/`` sub-folder when there is
one) is prompted with the exact bounding box of its mask; the model's low-resolution logits
are upsampled bilinearly to the image and thresholded at 0; IoU and Dice are computed at the
image's own resolution. Models are registry names (``medsam2``, ``sam2.1-tiny``, a trained
``medsam2@RUN``), a run folder or a run checkpoint (``best.pt``). Other engines (``medsam``,
a trained ``medsam@RUN``, ``classic``) segment each image through
:func:`segloop.engines.image2d.segment_image` with the same box, with their own
pre- and post-processing (MedSAM's: sigmoid > 0.5).

Imports torch; must not import the API, the jobs layer or the CLI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from segloop.errors import InputError
from segloop.train.data import sample_prompt
from segloop.train.model import forward_clip, frames_to_tensor, prompt_inputs, resolve_device
from segloop.train.records import ImageRecord
from segloop.train.sources import load_folder_records

__all__ = ["Folder2DResult", "evaluate_folders", "format_table", "load_named_model"]

log = logging.getLogger(__name__)


@dataclass
class Folder2DResult:
    """Per-model means and per-image rows (``model, image, iou, dice``)."""

    models: list[str]
    summary: dict[str, dict[str, float]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)


def load_named_model(name: str, device: torch.device) -> Any:
    """A model by registry name (``@RUN`` versions included), run folder or ``.pt`` checkpoint."""
    path = Path(name)
    if path.is_dir() and (path / "best.pt").is_file():
        path = path / "best.pt"
    if path.is_file() and path.suffix == ".pt":
        from segloop.train.trainer import load_checkpoint

        model, _ = load_checkpoint(path, device)
        return model
    from segloop.models.loader import load_model
    from segloop.models.registry import get_spec
    from segloop.models.versions import register_saved_runs

    register_saved_runs()
    return load_model(get_spec(name).name, device=device)


def _engine_for(name: str) -> Any | None:
    """The engine that evaluates ``name`` when it is not a SAM 2-family model, else None."""
    if Path(name).exists():
        return None
    from segloop.engines import get_engine
    from segloop.errors import SegloopError
    from segloop.models.registry import get_spec
    from segloop.models.versions import register_saved_runs

    register_saved_runs()
    try:
        engine_name = get_spec(name).engine
    except SegloopError:  # not a model: an engine such as classic
        return get_engine(name)
    return get_engine(name) if engine_name == "medsam" else None


def _predictor(name: str, dev: torch.device) -> Callable[[ImageRecord], np.ndarray]:
    """``record -> (H, W)`` bool prediction from the exact box of its truth."""
    engine = _engine_for(name)
    if engine is not None:
        from segloop.engines.image2d import segment_image
        from segloop.io.image2d import Image2D, ImageSource
        from segloop.types import Prompts

        def by_engine(rec: ImageRecord) -> np.ndarray:
            box = sample_prompt(rec.truth[0], None).box
            assert box is not None
            image = Image2D(pixels=rec.frames[0], source=ImageSource.PNG)
            return segment_image(engine, image, Prompts.make(box=[int(v) for v in box]))

        return by_engine
    model = load_named_model(name, dev)
    size = int(model.config.image_size)

    def by_model(rec: ImageRecord) -> np.ndarray:
        h, w = rec.truth.shape[1:]
        prompt = sample_prompt(rec.truth[0], None)
        out = forward_clip(model, frames_to_tensor(rec.frames, size),
                           prompt_inputs(prompt, int(h), int(w), size), dev)[0]
        up = F.interpolate(out.logits.float(), size=(int(h), int(w)), mode="bilinear",
                           align_corners=False)
        pred: np.ndarray = (up[0, 0] > 0).cpu().numpy()
        return pred

    return by_model


def _scores(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    inter = float(np.logical_and(pred, truth).sum())
    union = float(np.logical_or(pred, truth).sum())
    total = float(pred.sum() + truth.sum())
    iou = inter / union if union else 1.0
    dice = 2 * inter / total if total else 1.0
    return iou, dice


def evaluate_folders(images: Path, masks: Path, models: Sequence[str], *, device: str = "auto",
                     threads: int = 2,
                     on_progress: Callable[[str, int, int], None] | None = None,
                     figures: Path | None = None) -> Folder2DResult:
    """Mean IoU/Dice of each model on the image/mask folders (see module docstring).

    figures: a folder for one comparison PNG per image (image + box, truth, each model's mask
    with its IoU and Dice; :mod:`segloop.train.eval2d_figures`)."""
    if not models:
        raise InputError("name at least one model to evaluate")
    if (images / "val").is_dir() and (masks / "val").is_dir():
        images, masks = images / "val", masks / "val"
    records: list[ImageRecord] = [r for r in load_folder_records(images, masks) if r.truth.any()]
    if not records:
        raise InputError(f"no image of {images} has a non-empty mask")
    torch.set_num_threads(max(1, threads))
    dev = resolve_device(device)
    result = Folder2DResult(models=list(models))
    preds: dict[str, list[tuple[str, np.ndarray, float, float]]] = {r.name: [] for r in records}
    for name in models:
        predict = _predictor(name, dev)
        ious: list[float] = []
        dices: list[float] = []
        with torch.no_grad():
            for i, rec in enumerate(records):
                pred = predict(rec)
                iou, dice = _scores(pred, rec.truth[0])
                ious.append(iou)
                dices.append(dice)
                result.rows.append({"model": name, "image": rec.name, "iou": iou, "dice": dice})
                if figures is not None:
                    preds[rec.name].append((name, pred, iou, dice))
                if on_progress is not None:
                    on_progress(name, i + 1, len(records))
        result.summary[name] = {"mean_iou": float(np.mean(ious)),
                                "mean_dice": float(np.mean(dices)), "n": float(len(ious))}
    if figures is not None:
        from segloop.train.eval2d_figures import safe_stem, write_image_figure

        for i, rec in enumerate(records):
            box = sample_prompt(rec.truth[0], None).box
            write_image_figure(figures / f"{i:04d}_{safe_stem(rec.name)}.png", rec.frames[0],
                               rec.truth[0], box, preds[rec.name])
    return result


def format_table(result: Folder2DResult) -> str:
    """A text table: model, images, mean IoU, mean Dice, and deltas against the first model."""
    first = result.summary[result.models[0]]
    lines = [f"{'model':<30} {'n':>4} {'mean IoU':>9} {'mean Dice':>10} {'dIoU':>8} {'dDice':>8}"]
    for name in result.models:
        s = result.summary[name]
        lines.append(f"{name:<30} {int(s['n']):>4} {s['mean_iou']:>9.4f} {s['mean_dice']:>10.4f}"
                     f" {s['mean_iou'] - first['mean_iou']:>+8.4f}"
                     f" {s['mean_dice'] - first['mean_dice']:>+8.4f}")
    return "\n".join(lines)
