"""Write the mask of a 2D image at exactly the input's size: PNG, NIfTI/NRRD (one-slice
volume input, on its source grid) or DICOM-SEG (single-frame DICOM input).

Masks are ``(H, W)`` arrays (row, column) like :class:`~segloop.io.image2d.Image2D` pixels.
Writes are atomic. Must not import torch, FastAPI, Celery or any engine.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from segloop.errors import InputError
from segloop.io.image2d import Image2D, ImageSource
from segloop.io.sniff import one_line
from segloop.io.writers import atomic_path, save_mask

__all__ = ["save_mask_2d", "write_dicom_seg_2d"]

log = logging.getLogger(__name__)

#: patient/study attributes highdicom copies into the SEG (type 2: may be empty, not absent)
_TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                 "StudyTime", "StudyID", "ReferringPhysicianName", "AccessionNumber")
_VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".npz")


def _check(mask: npt.NDArray[Any], image: Image2D) -> npt.NDArray[np.uint8]:
    m = np.asarray(mask)
    if m.shape != (image.height, image.width):
        raise InputError(f"mask has shape {m.shape}, expected the image's {(image.height, image.width)}")
    if m.dtype == np.bool_:
        return m.astype(np.uint8)
    if m.size and (m.min() < 0 or m.max() > 255):
        raise InputError("mask values must be in 0..255 (uint8 label map)")
    return m.astype(np.uint8)


def save_mask_2d(mask: npt.NDArray[Any], image: Image2D, path: str | Path, *,
                 foreground: int | None = 255) -> Path:
    """Write ``mask`` (``(H, W)`` bool or uint8 labels) for ``image``; returns the path.

    path ``.png``: an 8-bit grey PNG of the image's size; a bool mask is written as 0 /
    ``foreground`` (255, or None to keep 0/1), a label map as its values. path
    ``.nii``/``.nii.gz``/``.nrrd``/``.mha``/``.npz``: only for one-slice volume input
    (``image.volume``), written on the source grid with its geometry.
    """
    dest = Path(path)
    name = dest.name.lower()
    labels = _check(mask, image)
    if np.asarray(mask).dtype == np.bool_ and foreground is not None:
        labels = labels * np.uint8(foreground)
    if name.endswith(_VOLUME_SUFFIXES):
        if image.volume is None:
            raise InputError(
                f"{dest}: a {image.source.value.upper()} image gets a PNG mask; name the output .png"
            )
        vol_labels = _check(mask, image)  # label values, never 255, in volume files
        return save_mask(image.mask_to_volume(vol_labels), image.volume, dest)
    if not name.endswith(".png"):
        raise InputError(f"{dest}: unsupported output file type for a 2D mask; use .png"
                         + (" or .nii.gz" if image.volume is not None else ""))
    from PIL import Image

    with atomic_path(dest) as tmp:
        Image.fromarray(np.ascontiguousarray(labels), mode="L").save(tmp, format="PNG")
    log.debug("wrote 2D mask %s (%d x %d)", dest, image.width, image.height)
    return dest


def write_dicom_seg_2d(mask: npt.NDArray[Any], image: Image2D, path: str | Path,
                       segment_name: str | dict[int, str] = "segment 1") -> Path:
    """A BINARY DICOM-SEG referencing the single-frame DICOM ``image`` (``(H, W)`` mask).

    ``segment_name`` a string: every non-zero pixel is one segment of that name; a dict
    (label value -> name): ``mask`` is a label map and each value present is one segment."""
    import pydicom

    from segloop.io.dicomseg import _fill_missing_uids, save_segmentation, segment_description

    if image.source is not ImageSource.DICOM or image.source_path is None:
        raise InputError(
            f"DICOM-SEG export needs DICOM input, but the image is {image.source.value}; "
            "write a PNG mask instead"
        )
    labels = _check(mask, image)
    names = {1: segment_name} if isinstance(segment_name, str) else dict(segment_name)
    if isinstance(segment_name, str):
        labels = (labels > 0).astype(np.uint8)
    present = [v for v in sorted(names) if (labels == v).any()]
    if not present:
        raise InputError("the mask is empty: nothing to export as DICOM-SEG")
    try:
        src = pydicom.dcmread(image.source_path, force=True)
    except Exception as exc:
        raise InputError(f"cannot re-read the source DICOM file for the SEG: {one_line(exc)}") from exc
    _fill_missing_uids([src])
    for attr in _TYPE2_COPIED:  # type 2 in the SEG: present, possibly empty
        if attr not in src:
            setattr(src, attr, "")
    planes = np.stack([labels == v for v in present], axis=-1)[None]  # (1, H, W, segments)
    descriptions = [segment_description(i + 1, names[v]) for i, v in enumerate(present)]
    return save_segmentation([src], planes, descriptions, path, "image")

