"""``load_volume``: read NIfTI, NRRD, MHA/MHD, DICOM series and .npz/.npy into a Volume.

The format is sniffed from content (:mod:`segloop.io.sniff`). Every reader checks the
image's dimensions and the voxel limit from the HEADER before any voxel data is read or
inflated, so a tiny file that claims a huge image is rejected cheaply. Problems come back
as :mod:`segloop.errors` types with one-line messages. Must not import torch.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from segloop.errors import InputError, UnsupportedFormatError, VolumeTooLargeError
from segloop.io.dicom import read_dicom_series
from segloop.io.sniff import detect_format, one_line
from segloop.io.volume import Volume

__all__ = ["DEFAULT_MAX_VOXELS", "READERS", "guess_modality", "load_volume"]

log = logging.getLogger(__name__)

#: default voxel limit (2**30, e.g. 1024 x 1024 x 1024): a decompression-bomb guard
DEFAULT_MAX_VOXELS = 2**30

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

Reader = Callable[[Path, int | None], Volume]


# --------------------------------------------------------------------------- shared checks


def _shape3(path: Path, shape: Sequence[int]) -> tuple[int, int, int]:
    """The 3D shape after squeezing trailing singleton dims; raises for 2D and true 4D+."""
    dims = [int(s) for s in shape]
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) < 3:
        raise InputError(
            f"{path}: found a {len(dims)}D image of shape {tuple(dims)}; segloop needs one 3D volume"
        )
    if len(dims) > 3:
        frames = math.prod(dims[3:])
        raise InputError(
            f"{path}: found a {len(dims)}D image of shape {tuple(dims)} with {frames} frames; "
            "segloop needs one 3D volume (extract one frame first)"
        )
    if 0 in dims:
        raise InputError(f"{path}: the image is empty (shape {tuple(dims)})")
    return dims[0], dims[1], dims[2]


def _check_voxels(path: Path, shape: Sequence[int], max_voxels: int | None) -> None:
    n = math.prod(int(s) for s in shape)
    if max_voxels is not None and n > max_voxels:
        raise VolumeTooLargeError(
            f"{path}: the header declares {'x'.join(str(int(s)) for s in shape)} = {n} voxels, "
            f"above the limit of {max_voxels} (max_voxels); nothing was read"
        )


def _check_finite(path: Path, data: npt.NDArray[Any]) -> None:
    if not np.issubdtype(data.dtype, np.floating) and not np.issubdtype(data.dtype, np.complexfloating):
        return
    bad = ~np.isfinite(data)
    if bad.any():
        n_nan = int(np.isnan(data).sum())
        n_inf = int(bad.sum()) - n_nan
        raise InputError(
            f"{path}: {n_nan} NaN and {n_inf} infinite voxel values out of {data.size}; "
            "segloop needs finite values (replace them, e.g. with numpy.nan_to_num)"
        )


def _integer_like(data: npt.NDArray[Any]) -> bool:
    if np.issubdtype(data.dtype, np.integer):
        return True
    flat = data.reshape(-1)
    sample = flat[:: max(1, flat.size // 200_000)]
    return bool(np.all(sample == np.round(sample)))


def guess_modality(data: npt.NDArray[Any]) -> str:
    """A guess from the intensities: ``"CT"`` when air-like values (< -500) are present and
    the values look like Hounsfield units (integers, or air near -1000), else ``"MR"``."""
    if data.size == 0:
        return "MR"
    lo = float(np.min(data))
    if lo < -500 and (_integer_like(data) or -1100.0 <= lo <= -900.0):
        return "CT"
    return "MR"


def _modality_from_text(text: str) -> str | None:
    m = re.search(r"(?<![A-Za-z])(CT|MRI?|PET|PT|US)(?![A-Za-z])", text.upper())
    if m is None:
        return None
    return {"MRI": "MR", "PET": "PT"}.get(m.group(1), m.group(1))


# --------------------------------------------------------------------------- NIfTI


_NIFTI_NAMES = (".nii", ".nii.gz", ".hdr", ".hdr.gz")


def _read_nifti(path: Path, max_voxels: int | None) -> Volume:
    if path.name.lower().endswith(_NIFTI_NAMES):
        return _read_nifti_named(path, path, max_voxels)
    # nibabel picks its reader from the file name: give it a correctly named link
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    with tempfile.TemporaryDirectory(prefix="segloop-") as tmp:
        link = Path(tmp) / ("image.nii.gz" if gz else "image.nii")
        try:
            link.symlink_to(path.resolve())
        except OSError:
            shutil.copyfile(path, link)
        return _read_nifti_named(link, path, max_voxels)


def _read_nifti_named(named: Path, path: Path, max_voxels: int | None) -> Volume:
    try:
        img: Any = nib.load(str(named), mmap=False)
    except (EOFError, zlib.error) as exc:
        raise InputError(f"{path}: the NIfTI file is truncated ({one_line(exc)})") from exc
    except Exception as exc:
        raise InputError(f"{path}: not a readable NIfTI image ({one_line(exc)})") from exc
    hdr: Any = img.header
    full_shape = tuple(int(s) for s in hdr.get_data_shape())
    shape = _shape3(path, full_shape)
    _check_voxels(path, full_shape, max_voxels)
    try:
        data = np.asanyarray(img.dataobj)
    except (EOFError, zlib.error) as exc:
        raise InputError(
            f"{path}: the NIfTI file is truncated or corrupt (voxel data ends early: {one_line(exc)}); "
            "re-export or re-download it"
        ) from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the NIfTI voxel data ({one_line(exc)})") from exc
    data = np.asarray(data).reshape(shape)
    if data.dtype == np.float64 and hdr.get_data_dtype() != np.float64:
        data = data.astype(np.float32)  # scl_slope scaling made float64; float32 is plenty
    descrip = hdr["descrip"].item().decode("latin-1", "replace").strip("\x00 ")
    modality = _modality_from_text(descrip) if descrip else None
    meta: dict[str, Any] = {
        "qform_code": int(hdr["qform_code"]),
        "sform_code": int(hdr["sform_code"]),
        "descrip": descrip,
        "nifti_version": 2 if isinstance(hdr, nib.Nifti2Header) else 1,
    }
    if modality:
        meta["modality_source"] = "header"
    return Volume(
        data=data,
        affine=np.asarray(img.affine, dtype=np.float64),
        source_format="nifti",
        modality=modality,
        source_path=path,
        meta=meta,
        header=hdr.copy(),
    )


# --------------------------------------------------------------------------- NRRD / MHA


def _read_itk(path: Path, max_voxels: int | None, fmt: str) -> Volume:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO("NrrdImageIO" if fmt == "nrrd" else "MetaImageIO")
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"{path}: not a readable {fmt.upper()} header ({_itk_msg(exc)})") from exc
    size = [int(s) for s in reader.GetSize()]
    ncomp = int(reader.GetNumberOfComponents())
    if ncomp > 1:
        raise InputError(
            f"{path}: found a {len(size)}D image of shape {tuple(size)} with {ncomp} "
            "components per voxel (vector / multi-frame); segloop needs one 3D scalar volume"
        )
    _shape3(path, size)
    _check_voxels(path, size, max_voxels)
    keys = {k: reader.GetMetaData(k) for k in reader.GetMetaDataKeys()}
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise InputError(
            f"{path}: cannot read the {fmt.upper()} voxel data, the file may be truncated ({_itk_msg(exc)})"
        ) from exc
    arr = sitk.GetArrayViewFromImage(img)
    dim = img.GetDimension()
    arr = arr.reshape(arr.shape[-3:]) if dim > 3 else arr
    data = np.ascontiguousarray(np.asarray(arr).transpose(2, 1, 0))
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    spacing = np.asarray(img.GetSpacing(), dtype=np.float64)[:3]
    origin = np.asarray(img.GetOrigin(), dtype=np.float64)[:3]
    lps = np.eye(4)
    lps[:3, :3] = direction * spacing[None, :]
    lps[:3, 3] = origin
    modality = None
    for k, v in keys.items():
        if "modality" in k.lower():
            modality = _modality_from_text(v.replace("MET_MOD_", " "))
    meta: dict[str, Any] = {"itk_metadata": {k: v for k, v in keys.items() if len(v) < 200}}
    if modality:
        meta["modality_source"] = "header"
    return Volume(
        data=data,
        affine=_LPS_TO_RAS @ lps,
        source_format=fmt,
        modality=modality,
        source_path=path,
        meta=meta,
    )


def _itk_msg(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if "Description" in ln or "error" in ln.lower()]
    return (useful or lines or ["unknown error"])[-1][:200]


# --------------------------------------------------------------------------- numpy


def _npy_header(fh: Any) -> tuple[tuple[int, ...], np.dtype[Any]]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    return tuple(int(s) for s in shape), np.dtype(dtype)


def _volume_from_array(
    path: Path, data: npt.NDArray[Any], affine: npt.NDArray[Any] | None, spacing: Any, fmt: str
) -> Volume:
    shape = _shape3(path, data.shape)
    data = np.asarray(data).reshape(shape)
    if not (np.issubdtype(data.dtype, np.number) or data.dtype == np.bool_):
        raise InputError(f"{path}: the array has non-numeric dtype {data.dtype}")
    meta: dict[str, Any] = {}
    if affine is not None:
        aff = np.asarray(affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise InputError(f"{path}: 'affine' must be a 4x4 array, got shape {aff.shape}")
        meta["affine_source"] = "affine"
    elif spacing is not None:
        sp = np.asarray(spacing, dtype=np.float64).reshape(-1)
        if sp.shape != (3,) or np.any(sp <= 0):
            raise InputError(f"{path}: 'spacing' must be 3 positive numbers (mm), got {sp}")
        aff = np.diag([*sp, 1.0])
        meta["affine_source"] = "spacing"
    else:
        aff = np.eye(4)
        meta["affine_source"] = "none (identity: 1 mm voxels, RAS)"
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    return Volume(data=data, affine=aff, source_format=fmt, source_path=path, meta=meta)


def _read_npz(path: Path, max_voxels: int | None) -> Volume:
    with zipfile.ZipFile(path) as zf:
        keys = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
        arrays = [k for k in keys if k not in ("affine", "spacing")]
        if "image" in keys:
            key = "image"
        elif len(arrays) == 1:
            key = arrays[0]
        else:
            raise InputError(
                f"{path}: .npz has arrays {sorted(keys)}; name the volume 'image' "
                "(optional 'affine' 4x4 or 'spacing' (3,))"
            )
        with zf.open(key + ".npy") as fh:
            shape, _ = _npy_header(fh)
    _shape3(path, shape)
    _check_voxels(path, shape, max_voxels)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = z[key]
            affine = z["affine"] if "affine" in keys else None
            spacing = z["spacing"] if "spacing" in keys else None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: cannot read the .npz arrays ({one_line(exc)})") from exc
    return _volume_from_array(path, data, affine, spacing, "npz")


def _read_npy(path: Path, max_voxels: int | None) -> Volume:
    with open(path, "rb") as fh:
        shape, _ = _npy_header(fh)
    _shape3(path, shape)
    _check_voxels(path, shape, max_voxels)
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(
            f"{path}: cannot read the .npy array, it may be truncated ({one_line(exc)})"
        ) from exc
    return _volume_from_array(path, data, None, None, "npy")


def _read_dicom(path: Path, max_voxels: int | None) -> Volume:
    return read_dicom_series(path, max_voxels=max_voxels)


#: format name (as returned by detect_format) -> reader(path, max_voxels)
READERS: dict[str, Reader] = {
    "nifti": _read_nifti,
    "nrrd": lambda p, m: _read_itk(p, m, "nrrd"),
    "mha": lambda p, m: _read_itk(p, m, "mha"),
    "dicom": _read_dicom,
    "dicom-zip": _read_dicom,
    "npz": _read_npz,
    "npy": _read_npy,
}


def load_volume(
    path: str | Path,
    *,
    series_uid: str | None = None,
    max_voxels: int | None = DEFAULT_MAX_VOXELS,
) -> Volume:
    """Read a 3D image into a :class:`Volume` (array in source order, affine voxel -> RAS mm).

    path: a NIfTI/NRRD/MHA/MHD/.npz/.npy file, a DICOM series folder, a .zip of a series or
        one DICOM file of a series; the format is sniffed from the content.
    series_uid: which DICOM series to read when a folder holds several.
    max_voxels: refuse images declaring more voxels than this (checked from the header,
        before data is read); None disables the check.

    Raises InputError (missing/unreadable/truncated/2D/4D/non-finite/DICOM problems),
    UnsupportedFormatError and VolumeTooLargeError, each with a one-line message.
    """
    p = Path(path).expanduser()
    fmt = detect_format(p)
    if fmt in ("dicom", "dicom-zip"):
        vol = read_dicom_series(p, series_uid=series_uid, max_voxels=max_voxels)
    elif series_uid is not None:
        raise InputError(f"{p}: --series/series_uid only applies to DICOM input, found {fmt}")
    else:
        reader = READERS.get(fmt)
        if reader is None:  # pragma: no cover - detect_format only returns known names
            raise UnsupportedFormatError(f"{p}: no reader for format {fmt}")
        vol = reader(p, max_voxels)
    _check_finite(p, vol.data)
    if vol.modality is None:
        guess = guess_modality(vol.data)
        meta = {**vol.meta, "modality_source": "guess (from intensities)"}
        vol = Volume(
            data=vol.data,
            affine=vol.affine,
            source_format=vol.source_format,
            modality=guess,
            source_path=vol.source_path,
            dicom=vol.dicom,
            meta=meta,
            header=vol.header,
        )
    log.debug("loaded %s (%s) shape=%s modality=%s", p, fmt, vol.shape, vol.modality)
    return vol
