"""2D image jobs: a PNG / JPEG / TIFF / BMP or single-frame DICOM upload as a job.

A 2D job is stored like a volume job with one slice, so the store, the tasks and the mask
versions need nothing new: its canonical grid is ``(X = width, Y = height, 1)`` with
``x`` = column and ``y`` = row from the top-left (the coordinates of every image tool and of
``segloop segment`` on a 2D image), spacing the image's pixel size (1 mm when unknown).
What differs:

- the job folder holds ``image2d.json`` (the source format and file) and ``display.png`` (the
  picture as the viewer shows it: 8-bit, RGB kept in colour, MONOCHROME1 already inverted);
- ``canonical.nii`` holds the grey (luminance) pixels, for the volume-based readers
  (datastore, protocols); the worker segments the picture itself, RGB included
  (:mod:`segloop.engines.image2d_session`);
- ``source_format`` is ``2d-png``, ``2d-jpeg``, ``2d-tiff``, ``2d-bmp`` or ``2d-dicom``
  (:func:`is_2d_format`), and results go back at the picture's exact size
  (:func:`result_png`, :func:`result_dicom_seg`).

One-slice NIfTI / NRRD / MHA uploads stay volume jobs (they have a volume's geometry).
Imports segloop.io and segloop.engines.image2d (for the uint8 display rule); never torch,
FastAPI or Celery.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.ism, segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from segloop.io.image2d import Image2D, ImageSource, image2d_format, load_image2d
from segloop.io.volume import Volume

__all__ = [
    "DISPLAY_NAME",
    "FORMAT_PREFIX",
    "MARKER_NAME",
    "Image2DIngest",
    "canonical_of",
    "ingest_2d",
    "is_2d_format",
    "load_job_image",
    "result_dicom_seg",
    "result_png",
    "upload_is_2d",
]

#: ``source_format`` of a 2D job: this prefix and the image's format
FORMAT_PREFIX = "2d-"
#: the job folder's record of a 2D job (source format, file)
MARKER_NAME = "image2d.json"
#: the picture as the viewer shows it (8-bit grey or RGB PNG)
DISPLAY_NAME = "display.png"

_PICTURE_EXT = {ImageSource.PNG: "png", ImageSource.JPEG: "jpg", ImageSource.TIFF: "tif",
                ImageSource.BMP: "bmp", ImageSource.DICOM: "dcm"}


def is_2d_format(source_format: str) -> bool:
    """True for the ``source_format`` of a 2D image job."""
    return source_format.startswith(FORMAT_PREFIX)


def upload_is_2d(path: Path) -> ImageSource | None:
    """The 2D format of an uploaded file that becomes a 2D job (a picture or a single-frame
    DICOM), else None (volumes, one-slice NIfTI/NRRD/MHA and unknown files go the volume way)."""
    kind = image2d_format(path)
    return kind if kind in _PICTURE_EXT else None


@dataclass(frozen=True)
class Image2DIngest:
    """What ingesting a 2D upload produced: the canonical one-slice volume (grey) and the
    source file relative to the job folder."""

    volume: Volume
    rel: str


def _grey(image: Image2D) -> npt.NDArray[Any]:
    """The pixels as one channel: grey as is, RGB as Rec. 601 luminance in the same dtype."""
    px = image.pixels
    if not image.is_rgb:
        return px
    lum = px.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    if np.issubdtype(px.dtype, np.integer):
        info = np.iinfo(px.dtype)
        lum = np.clip(np.rint(lum), info.min, info.max)
    out: npt.NDArray[Any] = lum.astype(px.dtype)
    return out


def canonical_of(image: Image2D, source_format: str) -> Volume:
    """The one-slice canonical Volume ``(X = W, Y = H, 1)`` of ``image`` (grey pixels,
    spacing the image's or 1 mm), x = column and y = row."""
    row_mm, col_mm = image.spacing or (1.0, 1.0)
    affine = np.diag([float(col_mm), float(row_mm), 1.0, 1.0])
    data = np.ascontiguousarray(_grey(image).T[:, :, None])
    return Volume(data=data, affine=affine, source_format=source_format,
                  modality=image.modality)


def _display_png(image: Image2D) -> bytes:
    from PIL import Image

    px = image.pixels
    if px.dtype != np.uint8:  # 16-bit, DICOM values: scaled as for the models
        from segloop.engines.image2d import to_uint8_image

        px = to_uint8_image(px, image.modality)
    buf = io.BytesIO()
    Image.fromarray(px, mode="RGB" if px.ndim == 3 else "L").save(buf, format="PNG")
    return buf.getvalue()


def ingest_2d(upload: Path, dest: Path, kind: ImageSource, max_pixels: int) -> Image2DIngest:
    """Move a 2D upload into ``dest/source`` and read it; writes ``dest/image2d.json`` and
    ``dest/display.png`` (the caller writes the canonical volume). ``dest`` must not exist."""
    from segloop.fsio import atomic_write_bytes

    src_dir = dest / "source"
    src_dir.mkdir(parents=True)
    name = f"upload.{_PICTURE_EXT[kind]}"
    shutil.move(str(upload), src_dir / name)
    rel = f"source/{name}"
    image = load_image2d(dest / rel, max_pixels=max_pixels)
    fmt = FORMAT_PREFIX + kind.value
    record = {"source": kind.value, "rel": rel, "height": image.height, "width": image.width,
              "rgb": image.is_rgb, "dtype": str(image.pixels.dtype),
              "spacing": list(image.spacing) if image.spacing else None,
              "inverted": image.inverted}
    atomic_write_bytes(dest / DISPLAY_NAME, _display_png(image))
    atomic_write_bytes(dest / MARKER_NAME, json.dumps(record).encode())
    return Image2DIngest(volume=canonical_of(image, fmt), rel=rel)


def load_job_image(job_dir: Path, max_pixels: int | None = None) -> Image2D | None:
    """The picture of a 2D job (as uploaded, RGB kept), None for a volume job."""
    marker = job_dir / MARKER_NAME
    if not marker.exists():
        return None
    record = json.loads(marker.read_text(encoding="utf-8"))
    return load_image2d(job_dir / str(record["rel"]), max_pixels=max_pixels)


def _mask_of(labels: npt.NDArray[Any], image: Image2D) -> npt.NDArray[np.uint8]:
    """A ``(W, H, 1)`` canonical label map as the image's ``(H, W)`` uint8 mask."""
    lab = np.asarray(labels)
    if lab.shape != (image.width, image.height, 1):
        raise AssertionError(f"label map {lab.shape} does not fit the image "
                             f"{(image.width, image.height, 1)}")  # pragma: no cover
    return np.ascontiguousarray(lab[:, :, 0].T.astype(np.uint8))


def result_png(labels: npt.NDArray[Any], image: Image2D, colours: dict[int, str] | None
               ) -> bytes:
    """The mask PNG at the image's exact size: with ``colours`` (label value -> ``#rrggbb``)
    an RGBA overlay (transparent background), else 8-bit grey label values."""
    from PIL import Image

    mask = _mask_of(labels, image)
    if colours is None:
        img = Image.fromarray(mask, mode="L")
    else:
        rgba = np.zeros((*mask.shape, 4), np.uint8)
        for value, colour in colours.items():
            c = colour.lstrip("#")
            rgba[mask == value] = (int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16), 255)
        img = Image.fromarray(rgba, mode="RGBA")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def result_dicom_seg(labels: npt.NDArray[Any], image: Image2D, path: Path,
                     names: dict[int, str]) -> Path:
    """Write a DICOM-SEG of the mask referencing a single-frame DICOM upload."""
    from segloop.io.image2d_write import write_dicom_seg_2d

    mask = _mask_of(labels, image)
    write_dicom_seg_2d(mask, image, path, names)
    return path
