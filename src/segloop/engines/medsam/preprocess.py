"""MedSAM's own pre- and post-processing rules, in numpy (no torch).

As ``MedSAM_Inference.py`` (bowang-lab/MedSAM): a grey image is repeated to 3 channels (RGB
stays RGB), resized to the model size with scikit-image's ``resize(order=3,
preserve_range=True, anti_aliasing=True)``, min-max scaled to [0, 1] (denominator clipped at
1e-8), and fed without mean/std normalisation; the box ``(x0, y0, x1, y1)`` in image pixels is
scaled by ``size / (W, H, W, H)``. Points are scaled the same way. Post-processing (in the
predictor): sigmoid of the 256² low-resolution logits, bilinear upsampling
(``align_corners=False``) of the probabilities to ``(H, W)``, threshold 0.5.

Also the volume rule: the box of a neighbour's mask with a margin (:func:`box_of_mask`).
Must not import torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["box_of_mask", "image_to_model_input", "scale_box", "scale_points"]


def image_to_model_input(pixels: npt.NDArray[Any], size: int) -> npt.NDArray[np.float32]:
    """``(H, W)`` or ``(H, W, 3)`` pixels -> the model input ``(3, size, size)`` float32 in [0, 1]."""
    from skimage import transform

    img = np.asarray(pixels)
    img_3c = np.repeat(img[:, :, None], 3, axis=-1) if img.ndim == 2 else img
    resized = transform.resize(img_3c, (size, size), order=3, preserve_range=True,
                               anti_aliasing=True).astype(np.uint8)
    # MedSAM casts the resized image to uint8 before scaling ("img_1024 = ....astype(np.uint8)")
    lo, hi = float(resized.min()), float(resized.max())
    scaled = (resized - lo) / np.clip(hi - lo, a_min=1e-8, a_max=None)
    return np.ascontiguousarray(scaled.transpose(2, 0, 1), dtype=np.float32)


def scale_box(box: tuple[int, int, int, int], height: int, width: int,
              size: int) -> npt.NDArray[np.float64]:
    """A box ``(x0, y0, x1, y1)`` in image pixels -> model pixels ``(4,)`` float64."""
    out: npt.NDArray[np.float64] = (np.asarray(box, dtype=np.float64)
                                    / np.array([width, height, width, height]) * size)
    return out


def scale_points(points: npt.NDArray[Any], height: int, width: int,
                 size: int) -> npt.NDArray[np.float64]:
    """``(N, 2)`` ``(x, y)`` image pixels -> model pixels, as the box."""
    out: npt.NDArray[np.float64] = (np.asarray(points, dtype=np.float64).reshape(-1, 2)
                                    / np.array([width, height]) * size)
    return out


def box_of_mask(mask: npt.NDArray[np.bool_], margin: int) -> tuple[int, int, int, int] | None:
    """The ``(x0, y0, x1, y1)`` box of an ``(H, W)`` mask grown by ``margin`` pixels (clipped)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    h, w = mask.shape
    return (max(int(cols[0]) - margin, 0), max(int(rows[0]) - margin, 0),
            min(int(cols[-1]) + margin, w - 1), min(int(rows[-1]) + margin, h - 1))
