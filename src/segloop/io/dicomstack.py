"""One DICOM image series' slices stacked into a Volume: slices sorted along the normal,
spacing checked (duplicates, missing slices, uneven gaps), the affine from
ImageOrientationPatient / ImagePositionPatient / PixelSpacing (LPS) converted to RAS+, and the
pixels with RescaleSlope/Intercept applied.

Array axes: i = column (along the row direction), j = row, k = slice (sorted along the
normal), so ``data[:, :, k] == pixel_array(slice k).T``. Uses pydicom and numpy; must not
import torch or segloop.io.dicom (which calls it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from segloop.errors import InputError, UnsupportedFormatError, VolumeTooLargeError
from segloop.io.dicomfiles import DicomSource, SeriesInfo
from segloop.io.sniff import one_line
from segloop.io.volume import DicomRef, Volume

__all__ = ["assemble_series", "check_spacing"]

log = logging.getLogger(__name__)

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _floats(ds: Dataset, name: str, n: int, ref: Path) -> npt.NDArray[np.float64]:
    val = ds.get(name)
    if val is None or len(val) != n:
        raise InputError(f"{ref}: DICOM image lacks {name}; cannot place it in space")
    return np.asarray([float(v) for v in val], dtype=np.float64)


def check_spacing(d: npt.NDArray[np.float64], uid: str) -> float:
    """Slice step (mm) along the normal; raises on duplicates, missing slices, uneven gaps."""
    diffs = np.diff(d)
    if diffs.size == 0:
        return 0.0
    if np.any(diffs < 1e-3):
        n_distinct = int(np.sum(diffs >= 1e-3)) + 1
        raise InputError(
            f"DICOM series {uid} has {d.size} images but only {n_distinct} distinct slice "
            "positions (several images per position: echoes, phases or time points?); "
            "segloop needs one image per slice"
        )
    step = float(np.median(diffs))
    tol = max(0.01 * step, 0.02)
    bad = np.flatnonzero(np.abs(diffs - step) > tol)
    if bad.size == 0:
        return step
    ratios = diffs[bad] / step
    if np.all(np.abs(ratios - np.round(ratios)) * step <= tol) and np.all(np.round(ratios) >= 2):
        missing = int(np.sum(np.round(ratios) - 1))
        where = ", ".join(f"z={d[i]:g} and z={d[i + 1]:g}" for i in bad[:3])
        more = f" and {bad.size - 3} more gaps" if bad.size > 3 else ""
        raise InputError(
            f"DICOM series {uid} has {missing} missing slice{'s' if missing > 1 else ''} "
            f"between {where}{more} (mm along the slice normal; expected a slice every "
            f"{step:g} mm); export the complete series"
        )
    i = int(bad[0])
    raise InputError(
        f"DICOM series {uid} has uneven slice spacing: {diffs[i]:g} mm between z={d[i]:g} and "
        f"z={d[i + 1]:g} but {step:g} mm elsewhere ({bad.size} uneven gaps); segloop needs "
        "evenly spaced slices (resample the series first)"
    )


def _pixels(ds: Dataset, ref: Path) -> npt.NDArray[Any]:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise InputError(f"{ref}: DICOM file has no pixel data (not an image)")
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
        raise InputError(
            f"{ref}: cannot decode the DICOM pixel data (transfer syntax {ts}): {one_line(exc)}"
        ) from exc


def assemble_series(
    src: DicomSource,
    info: SeriesInfo,
    items: list[tuple[Path, Dataset]],
    max_voxels: int | None,
) -> Volume:
    """The Volume of series ``info`` from its ``(ref, header)`` pairs ``items`` (any order;
    pixels are read from ``src`` now); VolumeTooLargeError above ``max_voxels``."""
    uid = info.series_uid
    first_ref, first = items[0]
    if int(first.get("NumberOfFrames", 1) or 1) > 1:
        raise UnsupportedFormatError(
            f"{first_ref}: multi-frame (enhanced) DICOM images are not supported yet; "
            "convert the series to single-frame files or NIfTI (e.g. with dcm2niix)"
        )
    if int(first.get("SamplesPerPixel", 1)) != 1:
        raise UnsupportedFormatError(f"{first_ref}: colour DICOM images are not supported")
    iop = _floats(first, "ImageOrientationPatient", 6, first_ref)
    for ref, ds in items:
        if (int(ds.Rows), int(ds.Columns)) != (info.rows, info.columns):
            raise InputError(
                f"DICOM series {uid} mixes image sizes ({info.rows}x{info.columns} and "
                f"{ds.Rows}x{ds.Columns} in {ref.name}); segloop needs one 3D volume"
            )
        if not np.allclose(_floats(ds, "ImageOrientationPatient", 6, ref), iop, atol=1e-3):
            raise InputError(
                f"DICOM series {uid} mixes slice orientations ({ref.name}); "
                "segloop needs one 3D volume (is this a localizer series?)"
            )
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    pos = np.stack([_floats(ds, "ImagePositionPatient", 3, r) for r, ds in items])
    d = pos @ normal
    order = np.argsort(d, kind="stable")
    items = [items[i] for i in order]
    pos, d = pos[order], d[order]
    n = len(items)
    if max_voxels is not None and info.rows * info.columns * n > max_voxels:
        raise VolumeTooLargeError(
            f"DICOM series {uid} has {info.columns}x{info.rows}x{n} = "
            f"{info.rows * info.columns * n} voxels, above the limit of {max_voxels}"
        )
    step = check_spacing(d, uid)
    ps = _floats(first, "PixelSpacing", 2, first_ref)
    if n > 1:
        kvec = (pos[-1] - pos[0]) / (n - 1)
    else:
        thick = float(first.get("SpacingBetweenSlices", 0) or first.get("SliceThickness", 0) or 1)
        kvec = normal * thick
    lps = np.eye(4)
    lps[:3, 0] = row_dir * ps[1]
    lps[:3, 1] = col_dir * ps[0]
    lps[:3, 2] = kvec
    lps[:3, 3] = pos[0]
    affine = _LPS_TO_RAS @ lps

    slopes = [float(ds.get("RescaleSlope", 1) or 1) for _, ds in items]
    inters = [float(ds.get("RescaleIntercept", 0) or 0) for _, ds in items]
    integer = all(s == 1 for s in slopes) and all(float(b).is_integer() for b in inters)
    data = np.empty((info.columns, info.rows, n), dtype=np.int32 if integer else np.float32)
    for k, (ref, _) in enumerate(items):
        ds = src.read(ref, header_only=False, force=True)
        raw = _pixels(ds, ref)
        if raw.shape != (info.rows, info.columns):
            raise InputError(f"{ref}: pixel data of shape {raw.shape}, expected 2D image")
        if integer:
            data[:, :, k] = raw.T.astype(np.int32) + int(inters[k])
        else:
            data[:, :, k] = raw.T.astype(np.float32) * slopes[k] + inters[k]
    if integer and data.size and data.min() >= -32768 and data.max() <= 32767:
        data = data.astype(np.int16)
    files = tuple(r for r, _ in items)
    modality = str(first.get("Modality", "")) or None
    meta: dict[str, Any] = {
        "series_uid": uid,
        "study_uid": info.study_uid,
        "series_description": info.description,
        "n_slices": n,
        "slice_step_mm": step,
        "modality_source": "dicom",
        "transfer_syntax": str(getattr(first.file_meta, "TransferSyntaxUID", ""))
        if hasattr(first, "file_meta")
        else "",
    }
    log.debug("read DICOM series %s: %s voxels", uid, data.shape)
    return Volume(
        data=data,
        affine=affine,
        source_format="dicom",
        modality=modality,
        source_path=src.path,
        dicom=DicomRef(files=files, series_uid=uid, study_uid=info.study_uid),
        meta=meta,
    )
