"""Request/response encodings of the ISM service: base64 images in, COCO RLE and a PNG out.

Every decoding failure raises a typed segloop error with a message a client can act on; image
sizes are checked from the header before pixels are decoded. Imports numpy, PIL, pycocotools,
scikit-image; never torch or FastAPI.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils  # type: ignore[import-untyped]
from scipy.ndimage import binary_dilation
from skimage.feature import canny

from segloop.errors import InputError, UnsupportedFormatError, VolumeTooLargeError

__all__ = ["decode_depth", "decode_image", "encode_png", "parse_cam_k", "to_rle", "visualize"]


def _open(data: str, field: str, max_pixels: int) -> Image.Image:
    if "," in data[:100] and data.lstrip().startswith("data:"):
        data = data.split(",", 1)[1]  # a data URL
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{field} is not valid base64: send the PNG/JPEG file's bytes "
                         "base64-encoded") from None
    try:
        img = Image.open(io.BytesIO(raw))
    except (UnidentifiedImageError, OSError):
        raise UnsupportedFormatError(f"{field} is not an image PNG/JPEG could decode "
                                     f"({len(raw)} bytes after base64)") from None
    w, h = img.size
    if w * h > max_pixels:
        raise VolumeTooLargeError(f"{field} is {w}×{h} = {w * h} pixels, over this server's limit of "
                                  f"{max_pixels} (ISM_MAX_PIXELS): downscale it")
    return img


def decode_image(data: str, max_pixels: int) -> np.ndarray:
    """Base64 PNG/JPEG → (H, W, 3) uint8 RGB."""
    img = _open(data, "rgb_image", max_pixels)
    try:
        return np.asarray(img.convert("RGB"))
    except OSError as exc:
        raise InputError(f"rgb_image is a truncated or corrupt image ({exc})") from None


def decode_depth(data: str, max_pixels: int) -> np.ndarray:
    """Base64 16-bit PNG → (H, W) uint16 raw depth (multiply by depth_scale for mm)."""
    img = _open(data, "depth_image", max_pixels)
    if img.mode not in ("I;16", "I;16B", "I;16L", "I"):
        raise InputError(f"depth_image must be a single-channel 16-bit PNG (got mode {img.mode}): "
                         "save the depth map as uint16, e.g. cv2.imwrite('d.png', depth.astype(np.uint16))")
    try:
        arr = np.asarray(img)
    except OSError as exc:
        raise InputError(f"depth_image is a truncated or corrupt image ({exc})") from None
    if arr.dtype.kind not in "ui" or (arr.size and (arr.min() < 0 or arr.max() > 65535)):
        raise InputError("depth_image must hold 16-bit unsigned values")
    return arr.astype(np.uint16)


def parse_cam_k(cam_k: Any) -> np.ndarray:
    """``cam_K`` as [[fx,0,cx],[0,fy,cy],[0,0,1]] (or its 9 numbers flat, as camera.json) → 3×3."""
    try:
        K = np.asarray(cam_k, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("cam_params.cam_K must be a 3×3 list of numbers "
                         "[[fx,0,cx],[0,fy,cy],[0,0,1]]") from None
    if K.shape == (9,):
        K = K.reshape(3, 3)
    if K.shape != (3, 3):
        raise InputError(f"cam_params.cam_K must be 3×3 (got shape {list(K.shape)}): "
                         "send [[fx,0,cx],[0,fy,cy],[0,0,1]]")
    if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError("cam_params.cam_K needs finite values and positive focal lengths fx, fy")
    return K


def to_rle(mask: np.ndarray) -> tuple[dict[str, Any], list[float]]:
    """Compressed COCO RLE ({"size": [H, W], "counts": str}) of an (H, W) bool mask, and its [x, y, w, h]."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    bbox = [float(v) for v in mask_utils.toBbox(rle)]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": rle["counts"].decode("ascii")}, bbox


def encode_png(img: np.ndarray) -> str:
    """Base64 PNG of a uint8 image."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def visualize(rgb: np.ndarray, best: np.ndarray | None) -> np.ndarray:
    """SAM-6D's ``vis_ism.png``: the image beside a grey copy with the best mask tinted green
    (alpha 0.33) and its outline in white. (H, 2W, 3) uint8."""
    gray = np.repeat(np.asarray(Image.fromarray(rgb).convert("L"))[..., None], 3, axis=2).astype(np.float64)
    if best is not None and best.any():
        alpha = 0.33
        gray[best] = alpha * np.array([0.0, 255.0, 0.0]) + (1 - alpha) * gray[best]
        edge = binary_dilation(canny(best.astype(np.float64)), np.ones((2, 2), dtype=bool))
        gray[edge] = 255
    return np.concatenate([rgb, gray.astype(np.uint8)], axis=1)
