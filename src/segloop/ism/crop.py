"""SAM-6D's crop-resize-pad: cut a box, pad it to a centred square, resize to S×S.

Used for templates and proposals alike before descriptors are computed. Imports numpy and PIL.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["crop_resize_pad", "mask_box"]


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Inclusive xyxy box of a non-empty (H, W) bool mask, in pixels."""
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


def crop_resize_pad(image: np.ndarray, box: tuple[float, float, float, float] | np.ndarray,
                    size: int = 224, nearest: bool = False) -> np.ndarray:
    """(H, W[, C]) image → (size, size[, C]) crop of ``box`` (xyxy) padded with zeros to a square.

    The square has side max(w, h) of the box and is centred on it (SAM-6D's CropResizePad)."""
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    w, h = x1 - x0 + 1, y1 - y0 + 1
    side = max(w, h, 1)
    out = np.zeros((side, side, *image.shape[2:]), dtype=image.dtype)
    ox, oy = (side - w) // 2, (side - h) // 2
    H, W = image.shape[:2]
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1 + 1, W), min(y1 + 1, H)
    if sx1 > sx0 and sy1 > sy0:
        out[oy + sy0 - y0:oy + sy1 - y0, ox + sx0 - x0:ox + sx1 - x0] = image[sy0:sy1, sx0:sx1]
    if out.dtype == bool:
        res = Image.fromarray(out.astype(np.uint8) * 255).resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(res) > 127
    pil = Image.fromarray(out)
    res = pil.resize((size, size), Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR)
    return np.asarray(res)
