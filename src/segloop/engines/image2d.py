"""Segment one 2D image with any engine: the engines' 2D entry point.

Prompts use 2D image coordinates (docs/DESIGN.md): ``x`` = column, ``y`` = row, pixels from
the top-left; a box is ``(x0, y0, x1, y1)`` with inclusive bounds. The result is an ``(H, W)``
bool mask.

- An engine whose class implements :class:`ImageSegmenter` (``segment_image``, e.g.
  ``medsam``) gets the pixels as they are, RGB included.
- Any other engine (``classic``, the volume engines) segments a one-slice volume whose axes
  are ``(x, y, 1)``, so ``x``/``y`` are its canonical voxel indices (x along axis 0); the
  spacing is the image's; when unknown (photographs) it is 1 mm with a box (the box gives
  the object's size), and for clicks alone such that the longer side spans :data:`FOV_MM`
  (256) mm, so a click's mm-based reach scales with the picture (a finer pixel size costs
  time: the engine's smoothing and morphology are sized in mm). A large box on a picture
  without a pixel size is segmented on a shrunk copy when the engine asks for it
  (``picture_px``, :func:`picture_scale`). Such engines model one intensity, so a colour
  image is first turned into one feature channel by :func:`colour_feature`: Fisher's linear
  discriminant between the colours the prompts mark as object (the inner half of the box, or
  discs around positive points) and as background (a ring around the box, negative points, or
  the whole image), projected so background ~ 0 and object ~ 100. The engine then works on
  how object-like each pixel's colour is, which keeps a red polyp on pink mucosa as separable
  as it is in colour (a grey conversion often loses exactly that contrast).

Must not import torch, FastAPI, Celery or the CLI.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from segloop.engines.base import Engine
from segloop.engines.sam2.preprocess import to_uint8_volume
from segloop.io.image2d import Image2D
from segloop.io.volume import Volume
from segloop.types import BoolArray, Prompts, validate_prompts

__all__ = ["ImageSegmenter", "colour_feature", "image_as_volume", "picture_scale", "segment_image",
           "segment_image_scored", "to_uint8_image", "validate_prompts_2d"]

log = logging.getLogger(__name__)

#: pictures without a pixel size are given one so that their longer side spans this many mm:
#: the classic engine's sizes in mm (smoothing, background ring, a first click's 100 mm reach)
#: then scale with the picture, whatever its resolution; at 256 one click can take an object
#: spanning most of the frame (tests: 0.99 Dice for a 400-px-wide object in a 640-px photo)
FOV_MM = 256.0


@runtime_checkable
class ImageSegmenter(Protocol):
    """An engine that segments 2D images natively (RGB or grey, at their own resolution)."""

    def segment_image(self, pixels: npt.NDArray[Any], prompts: Prompts,
                      spacing: tuple[float, float] | None = None) -> BoolArray:
        """``pixels`` ``(H, W)`` or ``(H, W, 3)``; prompts in (x = column, y = row); ``(H, W)`` mask."""
        ...


def validate_prompts_2d(prompts: Prompts, height: int, width: int) -> None:
    """PromptError unless the box and points lie inside a ``height`` x ``width`` image."""
    validate_prompts(0, prompts, (width, height, 1))


def _fg_bg_masks(h: int, w: int, prompts: Prompts) -> tuple[BoolArray, BoolArray]:
    """Where the prompts say object (fg) and background (bg), as ``(H, W)`` masks."""
    rr = np.arange(h)[:, None]
    cc = np.arange(w)[None, :]
    fg = np.zeros((h, w), dtype=bool)
    bg = np.zeros((h, w), dtype=bool)
    if prompts.box is not None:
        x0, y0, x1, y1 = prompts.box
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        ax, ay = max((x1 - x0) / 2, 1.0), max((y1 - y0) / 2, 1.0)
        fg |= ((cc - cx) / ax) ** 2 + ((rr - cy) / ay) ** 2 <= 0.25
        ring = max(3, round(0.15 * max(x1 - x0, y1 - y0)))
        outer = (cc >= x0 - ring) & (cc <= x1 + ring) & (rr >= y0 - ring) & (rr <= y1 + ring)
        inside = (cc >= x0) & (cc <= x1) & (rr >= y0) & (rr <= y1)
        bg |= outer & ~inside
    r = max(3, round(0.01 * min(h, w)))
    for (x, y), lab in zip(prompts.points.tolist(), prompts.labels.tolist(), strict=True):
        disc = (cc - x) ** 2 + (rr - y) ** 2 <= r * r
        if lab == 1:
            fg |= disc
        else:
            bg |= disc
    if not bg.any():  # positive points only: the image at large is the background
        near = np.zeros((h, w), dtype=bool)
        for (x, y) in prompts.points.tolist():
            near |= (cc - x) ** 2 + (rr - y) ** 2 <= (8 * r) ** 2
        bg = ~near
    return fg & ~bg, bg


def colour_feature(pixels: npt.NDArray[Any], prompts: Prompts) -> npt.NDArray[np.float32]:
    """One object-likeness channel ``(H, W)`` float32 from an ``(H, W, 3)`` colour image.

    Fisher's discriminant direction between the prompts' object and background colours
    (see the module docstring), scaled so the background mean maps to 0 and the object mean
    to 100. Falls back to the luminance when the prompts mark no colour on one side.
    """
    px = np.asarray(pixels, dtype=np.float32)
    h, w = px.shape[:2]
    fg, bg = _fg_bg_masks(h, w, prompts)
    luminance = px @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if fg.sum() < 4 or bg.sum() < 4:
        return np.ascontiguousarray(luminance)
    a, b = px[fg].astype(np.float64), px[bg].astype(np.float64)
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov = np.cov(a, rowvar=False) + np.cov(b, rowvar=False)
    cov += np.eye(3) * (1e-3 * float(np.trace(cov)) / 3 + 1e-6)
    direction = np.linalg.solve(cov, mu_a - mu_b)
    gap = float(direction @ (mu_a - mu_b))
    if not np.isfinite(gap) or gap <= 1e-9:
        return np.ascontiguousarray(luminance)
    scale = 100.0 / gap
    out = (px @ (direction * scale).astype(np.float32)) - np.float32(float(direction @ mu_b) * scale)
    return np.ascontiguousarray(out.astype(np.float32))


def image_as_volume(grey: npt.NDArray[Any], spacing: tuple[float, float] | None,
                    modality: str | None = None) -> Volume:
    """A ``(H, W)`` grey image as a canonical one-slice Volume ``(X=W, Y=H, 1)``; without a
    ``spacing`` (row_mm, col_mm) the longer side spans :data:`FOV_MM`."""
    if spacing is None:  # a CT-like field of view: the longer side spans FOV_MM
        h, w = np.asarray(grey).shape[:2]
        side = FOV_MM / max(h, w, 1)
        spacing = (side, side)
    row_mm, col_mm = spacing
    affine = np.diag([float(col_mm), float(row_mm), 1.0, 1.0])
    data = np.ascontiguousarray(np.asarray(grey).T[:, :, None])
    return Volume(data=data, affine=affine, source_format="image2d", modality=modality)


def to_uint8_image(pixels: npt.NDArray[Any], modality: str | None = None,
                   window: str | tuple[float, float] | None = "auto") -> npt.NDArray[np.uint8]:
    """Pixels as the SAM-family models take them: uint8 kept as is; other grey images windowed (CT) or
    percentile-scaled like a one-slice volume; other colour images min-max scaled."""
    px = np.asarray(pixels)
    if px.dtype == np.uint8:
        same: npt.NDArray[np.uint8] = px
        return same
    if px.ndim == 2:
        # to_uint8_volume shows a canonical slice in the radiological view (rotated by 180
        # degrees); a picture goes to the model as it is, so turn it back
        view = to_uint8_volume(px.T[:, :, None], modality, window)[0]
        grey: npt.NDArray[np.uint8] = np.ascontiguousarray(view[::-1, ::-1])
        return grey
    lo, hi = float(px.min()), float(px.max())
    scaled = (px.astype(np.float64) - lo) / max(hi - lo, 1e-8) * 255.0
    out: npt.NDArray[np.uint8] = scaled.astype(np.uint8)
    return out


def picture_scale(engine: Engine, image: Image2D, prompts: Prompts) -> float:
    """The factor (<= 1) a volume engine's picture is shrunk by before it is segmented.

    Only a picture without a pixel size, prompted with a box, for an engine whose options set
    ``picture_px`` (``classic``): the box's longer side is brought to that many pixels when it
    is longer. The engine reads such a picture's pixels as mm, and its sizes (background
    ring, cleaning, smoothing) were tuned on targets some 20-200 voxels across: on a
    700-pixel lung or skin lesion they see the ribs' and the pigment's texture, not the
    object (benchmarks/devset.md, "2D photos and X-rays"). Area averaging to the object's
    scale removes that texture, and costs a tenth of the time.
    """
    target = getattr(getattr(engine, "options", None), "picture_px", None)
    if target is None or image.spacing is not None or prompts.box is None:
        return 1.0
    x0, y0, x1, y1 = prompts.box
    side = max(x1 - x0 + 1, y1 - y0 + 1)
    return min(1.0, float(target) / side)


def _shrink(pixels: npt.NDArray[Any], size: tuple[int, int]) -> npt.NDArray[np.float32]:
    """``(H, W)`` or ``(H, W, C)`` pixels area-averaged to ``size`` = (width, height), float32."""
    from PIL import Image

    px = np.asarray(pixels, dtype=np.float32)
    chans = [px] if px.ndim == 2 else [px[:, :, c] for c in range(px.shape[2])]
    out = [np.asarray(Image.fromarray(np.ascontiguousarray(c), mode="F").resize(size, Image.Resampling.BOX))
           for c in chans]
    return np.ascontiguousarray(out[0] if px.ndim == 2 else np.stack(out, axis=2), dtype=np.float32)


def _scaled_prompts(prompts: Prompts, fx: float, fy: float, w: int, h: int) -> Prompts:
    """``prompts`` on a picture resized by (fx, fy) to ``w`` x ``h`` pixels: an inclusive box
    keeps every pixel it covered (its end pixel's far edge), points keep their pixel's centre."""
    box = None
    if prompts.box is not None:
        x0, y0, x1, y1 = prompts.box
        bx0, by0 = min(int(np.floor(x0 * fx)), w - 1), min(int(np.floor(y0 * fy)), h - 1)
        bx1 = min(max(int(np.ceil((x1 + 1) * fx)) - 1, bx0), w - 1)
        by1 = min(max(int(np.ceil((y1 + 1) * fy)) - 1, by0), h - 1)
        box = (bx0, by0, bx1, by1)
    pts = [(min(max(round((x + 0.5) * fx - 0.5), 0), w - 1), min(max(round((y + 0.5) * fy - 0.5), 0), h - 1))
           for x, y in prompts.points.tolist()]
    return Prompts.make(box, pts or None, prompts.labels.tolist() or None)


def _feature_prompts(engine: Engine, prompts: Prompts) -> Prompts:
    """The prompts a colour picture's feature is fitted to: the box alone when the engine
    handles a picture's clicks itself (``picture_click``), so that a click changes the mask
    around it and not the box's result; all of them otherwise."""
    if prompts.box is None or getattr(getattr(engine, "options", None), "picture_click", None) is None:
        return prompts
    return Prompts(box=prompts.box)


def _segment_volume_engine(engine: Engine, pixels: npt.NDArray[Any], prompts: Prompts,
                           spacing: tuple[float, float] | None, modality: str | None) -> BoolArray:
    """A volume engine's ``(H, W)`` mask of a picture: one feature channel, one-slice volume."""
    if np.asarray(pixels).ndim == 3:
        grey = colour_feature(pixels, _feature_prompts(engine, prompts))
    else:
        grey = pixels
    if spacing is None and prompts.box is not None:
        spacing = (1.0, 1.0)  # the box gives the object's size: pixel units, and fast
    session = engine.open(image_as_volume(grey, spacing, modality))
    return np.ascontiguousarray(session.segment_slice(0, prompts).T)


def segment_image(engine: Engine, image: Image2D, prompts: Prompts) -> BoolArray:
    """Segment ``image`` from ``prompts`` (x = column, y = row); returns an ``(H, W)`` bool mask.

    A volume engine gets a large boxed picture shrunk first (:func:`picture_scale`); its mask
    is brought back to full size by bilinear interpolation of the 0/1 mask at 0.5.
    """
    validate_prompts_2d(prompts, image.height, image.width)
    if isinstance(engine, ImageSegmenter):
        mask = engine.segment_image(image.pixels, prompts, image.spacing)
    else:
        scale = picture_scale(engine, image, prompts)
        if scale < 1.0:
            from PIL import Image

            w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
            small = _segment_volume_engine(
                engine, _shrink(image.pixels, (w, h)),
                _scaled_prompts(prompts, w / image.width, h / image.height, w, h), None, image.modality)
            up = Image.fromarray(small.astype(np.float32), mode="F").resize(
                (image.width, image.height), Image.Resampling.BILINEAR)
            mask = np.asarray(up) >= 0.5
        else:
            mask = _segment_volume_engine(engine, image.pixels, prompts, image.spacing, image.modality)
    if mask.shape != (image.height, image.width):  # pragma: no cover - an engine bug
        raise AssertionError(f"engine returned {mask.shape}, want {(image.height, image.width)}")
    return mask.astype(bool, copy=False)


def segment_image_scored(engine: Engine, image: Image2D, prompts: Prompts
                         ) -> tuple[BoolArray, float | None]:
    """:func:`segment_image` and the model's own predicted IoU of the mask, for engines that
    predict one (``segment_image_scored``: SAM-family IoU heads); None for the others."""
    scorer = getattr(engine, "segment_image_scored", None)
    if scorer is None:
        return segment_image(engine, image, prompts), None
    validate_prompts_2d(prompts, image.height, image.width)
    mask, score = scorer(image.pixels, prompts, image.spacing)
    return np.asarray(mask, dtype=bool), float(score)
