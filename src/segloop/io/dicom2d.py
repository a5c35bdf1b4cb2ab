"""Single-frame DICOM images (CR, DX, US, XA, MG, ... or any image without a slice position)
as :class:`~segloop.io.image2d.Image2D`.

The modality LUT (rescale slope/intercept) is applied, MONOCHROME1 is inverted so that bright
means dense as on MONOCHROME2 displays (same value range), YBR colour becomes RGB; the spacing
comes from PixelSpacing or ImagerPixelSpacing. Multi-frame files are refused. The pixel count
is checked from the header before decoding. Must not import torch, FastAPI, Celery or any
engine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segloop.errors import InputError
from segloop.io.image2d import Image2D, ImageSource, check_pixels, to_grey_or_rgb
from segloop.io.sniff import one_line

__all__ = ["dicom_is_2d", "read_dicom_2d"]

#: DICOM modalities that are projection or frame images (2D whatever their headers say)
_2D_MODALITIES = frozenset({"CR", "DX", "US", "XA", "RF", "MG", "IO", "PX", "ES", "XC", "GM", "OP",
                            "RG"})


def dicom_is_2d(path: Path) -> bool:
    """True for a DICOM image that is 2D: a projection/frame modality, or one frame without a
    slice position. False for unreadable files (the volume reader reports them)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception:
        return False  # the volume reader reports the problem
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    modality = str(ds.get("Modality", "")).upper()
    if modality in _2D_MODALITIES:
        return True
    return frames == 1 and "ImagePositionPatient" not in ds and "Rows" in ds


def read_dicom_2d(path: Path, max_pixels: int | None) -> Image2D:
    """One single-frame DICOM file as an Image2D (see the module docstring)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as exc:
        raise InputError(f"{path}: cannot read the DICOM file ({one_line(exc)})") from exc
    if "Rows" not in ds or "Columns" not in ds:
        raise InputError(f"{path}: DICOM file has no image (no Rows/Columns)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise InputError(
            f"{path}: the DICOM file holds {frames} frames (a cine or multi-frame image);"
            " segloop needs one 2D image (export one frame)"
        )
    check_pixels(path, int(ds.Rows), int(ds.Columns), int(ds.get("SamplesPerPixel", 1)), max_pixels)
    if "PixelData" not in ds:
        raise InputError(f"{path}: DICOM file has no pixel data (not an image)")
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as exc:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
        raise InputError(
            f"{path}: cannot decode the DICOM pixel data (transfer syntax {ts}), it may be"
            f" truncated: {one_line(exc)}"
        ) from exc
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    inverted = False
    if arr.ndim == 3:
        if photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space  # type: ignore[attr-defined]

            arr = convert_color_space(arr, photometric, "RGB")
        arr = to_grey_or_rgb(path, arr)
    else:
        slope = float(ds.get("RescaleSlope", 1) or 1)
        inter = float(ds.get("RescaleIntercept", 0) or 0)
        if slope != 1.0 or inter != 0.0:
            arr = arr.astype(np.float32) * slope + inter
            if np.all(arr == np.round(arr)) and arr.min() >= -32768 and arr.max() <= 32767:
                arr = arr.astype(np.int16)
        if photometric == "MONOCHROME1":  # same range, bright = dense (no integer overflow)
            wide = arr.astype(np.int64) if np.issubdtype(arr.dtype, np.integer) else arr
            arr = (wide.max() + wide.min() - wide).astype(arr.dtype)
            inverted = True
    spacing = None
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        sp = ds.get(tag)
        if sp is not None and len(sp) == 2 and all(float(v) > 0 for v in sp):
            spacing = (float(sp[0]), float(sp[1]))
            break
    modality = str(ds.get("Modality", "")).upper() or None
    return Image2D(pixels=arr, source=ImageSource.DICOM, spacing=spacing, modality=modality,
                   source_path=path, inverted=inverted,
                   meta={"photometric": photometric,
                         "sop_class_uid": str(ds.get("SOPClassUID", ""))})
