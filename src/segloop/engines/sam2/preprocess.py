"""MedSAM2's image preprocessing and mask post-processing, in numpy (no torch).

Intensities: CT is clipped to a window (a preset of ``io.windowing.CT_PRESETS``, the one window
table, ``(lower, upper)`` HU, or ``"L,W"``; validated by ``io.windowing.window_bounds``),
then min-max scaled over the whole clipped volume to uint8 (MedSAM2's own rule, including the
truncating cast); other modalities are clipped to the 0.5-99.5 percentiles first. Each slice
is an ``(H, W)`` image in the radiological view (:mod:`segloop.io.radiological`: anterior at
the top, the patient's right on the left; a canonical slice rotated by 180 degrees and
transposed), the view MedSAM2's own code sees for the usual LPS-stored CT. It is made RGB,
resized to the model size with PIL's bicubic filter (as MedSAM2 does), divided by 255 and
normalised with the ImageNet mean and std. Post-processing: SAM 2's small-hole filling on the
low-resolution logits and the largest 3D connected component.
Must not import torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from segloop.io.radiological import slice_to_view
from segloop.io.windowing import CT_PRESETS, CtPreset, window_bounds
from segloop.types import BoolArray

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "WINDOW_PRESETS",
    "fill_holes_in_scores",
    "largest_component",
    "largest_component_labels",
    "prompt_points",
    "slice_to_model_input",
    "to_uint8_volume",
    "window_bounds",
]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

#: CT windows as (level, width) in HU: a view of segloop's one table, io.windowing.CT_PRESETS
WINDOW_PRESETS: dict[str, tuple[float, float]] = {p.value: lw for p, lw in CT_PRESETS.items()}
DEFAULT_CT_WINDOW = CtPreset.SOFT_TISSUE.value


def _looks_like_ct(data: npt.NDArray[Any]) -> bool:
    return bool(np.nanmin(data) < -500 and np.nanmax(data) > 200)


def to_uint8_volume(
    data: npt.NDArray[Any],
    modality: str | None = None,
    window: str | tuple[float, float] | None = "auto",
) -> npt.NDArray[np.uint8]:
    """Scale a canonical ``(X, Y, Z)`` volume to uint8 radiological slices ``(Z, H=Y, W=X)``.

    ``window="auto"``: CT (by modality, or HU-like values when the modality is unknown) uses the
    soft-tissue window, anything else the 0.5/99.5 percentiles. A preset name, ``"L,W"`` or a
    ``(lower, upper)`` tuple forces a window; None forces percentile scaling.
    """
    vol = np.asarray(data)
    if window == "auto":
        is_ct = (modality or "").upper() == "CT" or (modality is None and _looks_like_ct(vol))
        window = DEFAULT_CT_WINDOW if is_ct else None
    bounds = window_bounds(window)
    if bounds is None:
        lo, hi = (float(v) for v in np.percentile(vol, [0.5, 99.5]))
    else:
        lo, hi = bounds
    # min/max of the clipped volume are the clipped min/max: scale slice by slice (low memory)
    vmin = float(np.clip(np.float64(vol.min()), lo, hi))
    vmax = float(np.clip(np.float64(vol.max()), lo, hi))
    out = np.zeros((vol.shape[2], vol.shape[1], vol.shape[0]), dtype=np.uint8)
    if vmax > vmin:
        for z in range(vol.shape[2]):
            sl = np.clip(vol[:, :, z].astype(np.float64), lo, hi)
            out[z] = slice_to_view(((sl - vmin) / (vmax - vmin) * 255.0).astype(np.uint8))
    return out


def slice_to_model_input(img: npt.NDArray[np.uint8], size: int) -> npt.NDArray[np.float32]:
    """One ``(H, W)`` uint8 slice as the model input ``(3, size, size)`` float32 (normalised)."""
    from PIL import Image

    resized = Image.fromarray(np.ascontiguousarray(img), mode=None).resize(
        (size, size), Image.Resampling.BICUBIC
    )
    # float64 arithmetic then float32, as MedSAM2 (numpy/torch float64 frames, .float() later)
    arr = np.asarray(resized, dtype=np.float64) / 255.0
    mean = IMAGENET_MEAN.astype(np.float64)[:, None, None]
    std = IMAGENET_STD.astype(np.float64)[:, None, None]
    return np.ascontiguousarray((arr[None, :, :] - mean) / std, dtype=np.float32)


def largest_component_labels(mask3d: BoolArray) -> tuple[npt.NDArray[Any], int]:
    """26-connected labels of a 3D bool mask and the label of its largest component.

    Labels are uint16 when the components fit (half the memory of scipy's int32) and the
    sizes are counted a few slices at a time, so a full 512x512x300 mask needs ~160 MB here
    instead of ~950 MB (``np.bincount`` on the whole volume makes an int64 copy). Ties go to
    the lowest label, as ``argmax``. The label is 0 when the mask is empty."""
    from scipy import ndimage

    structure = np.ones((3, 3, 3), bool)
    labels: npt.NDArray[Any] = np.empty(mask3d.shape, dtype=np.uint16)
    try:
        n = int(ndimage.label(mask3d, structure=structure, output=labels))
    except RuntimeError:  # more than 65535 components
        labels, n = ndimage.label(mask3d, structure=structure)
        n = int(n)
    if n == 0:
        return labels, 0
    counts = np.zeros(n + 1, dtype=np.int64)
    step = 8
    for z in range(0, mask3d.shape[2], step):
        counts += np.bincount(labels[:, :, z:z + step].ravel(), minlength=n + 1)
    counts[0] = 0
    return labels, int(counts.argmax())


def largest_component(mask3d: BoolArray) -> BoolArray:
    """The largest 26-connected component of a 3D bool mask (all False stays all False)."""
    if not mask3d.any():
        return mask3d.copy()
    labels, winner = largest_component_labels(mask3d)
    return np.asarray(labels == winner, dtype=bool)


def fill_holes_in_scores(scores: npt.NDArray[np.float32], max_area: int) -> npt.NDArray[np.float32]:
    """SAM 2's hole filling on a 2D map of mask logits (the model's low-resolution output).

    Background components (score <= 0, 8-connected, touching the border or not) of at most
    ``max_area`` pixels get the score 0.1, i.e. become foreground; ``max_area <= 0`` returns
    the input. MedSAM2 runs this with ``fill_hole_area=8`` when sam2's CUDA extension is built.
    """
    if max_area <= 0:
        return scores
    from scipy import ndimage

    bg = scores <= 0
    labels, n = ndimage.label(bg, structure=np.ones((3, 3), bool))
    if n == 0:
        return scores
    sizes = np.bincount(labels.ravel())
    small = sizes <= max_area
    small[0] = False
    out = scores.copy()
    out[small[labels]] = np.float32(0.1)
    return out


def prompt_points(
    box: tuple[float, float, float, float] | None,
    points: npt.NDArray[Any],
    labels: npt.NDArray[np.int64],
    scale_x: float,
    scale_y: float,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int32]]:
    """SAM 2's point prompt: box corners (labels 2, 3) first, then ± points (1 / 0).

    box: ``(x0, y0, x1, y1)`` slice pixels (int, or float for jittered training boxes) or None;
    points: ``(N, 2)`` ``(x, y)`` slice pixels;
    scale_x / scale_y: model pixels per slice pixel along x (width) and y (height).
    Returns coords ``(1, 1, K, 2)`` float32 in model pixels and labels ``(1, 1, K)`` int32.
    One encoding for inference and training, so a fine-tuned model sees what it learned on.
    """
    coords: list[list[float]] = []
    labs: list[int] = []
    if box is not None:
        x0, y0, x1, y1 = box
        coords += [[x0 * scale_x, y0 * scale_y], [x1 * scale_x, y1 * scale_y]]
        labs += [2, 3]
    for (x, y), lab in zip(points.tolist(), labels.tolist(), strict=True):
        coords.append([x * scale_x, y * scale_y])
        labs.append(int(lab))
    return (np.asarray([[coords]], dtype=np.float32).reshape(1, 1, len(coords), 2),
            np.asarray([[labs]], dtype=np.int32).reshape(1, 1, len(labs)))
