"""``load_volume``: read NIfTI, NRRD, MHA/MHD, DICOM series and .npz/.npy into a Volume.

The format is sniffed from content (:mod:`segloop.io.sniff`). Every reader checks the
image's dimensions and the voxel limit from the HEADER before any voxel data is read or
inflated, so a tiny file that claims a huge image is rejected cheaply. Problems come back
as :mod:`segloop.errors` types with one-line messages. Must not import torch.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from segloop.errors import InputError, UnsupportedFormatError
from segloop.io.detached import check_confined
from segloop.io.dicom import read_dicom_series
from segloop.io.inflate import inflate_errors, open_gzip
from segloop.io.itk import read_itk
from segloop.io.limits import DEFAULT_MAX_VOXELS, ReadLimits, check_bytes, itemsize_of, shape3
from segloop.io.sniff import detect_format, modality_from_text, one_line
from segloop.io.volume import Volume

__all__ = ["DEFAULT_MAX_VOXELS", "READERS", "ReadLimits", "guess_modality", "load_volume"]

log = logging.getLogger(__name__)

Reader = Callable[[Path, ReadLimits], Volume]


# --------------------------------------------------------------------------- shared checks


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


# --------------------------------------------------------------------------- NIfTI


_NIFTI_NAMES = (".nii", ".nii.gz", ".hdr", ".hdr.gz")


def _read_nifti(path: Path, limits: ReadLimits) -> Volume:
    if path.name.lower().endswith(_NIFTI_NAMES):
        return _read_nib(path, path, limits)
    # nibabel picks its reader from the file name: give it a correctly named link
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    with tempfile.TemporaryDirectory(prefix="segloop-") as tmp:
        link = Path(tmp) / ("image.nii.gz" if gz else "image.nii")
        try:
            link.symlink_to(path.resolve())
        except OSError:
            shutil.copyfile(path, link)
        return _read_nib(link, path, limits)


def _read_analyze(path: Path, limits: ReadLimits) -> Volume:
    if not path.name.lower().endswith((".hdr", ".hdr.gz")):
        raise InputError(f"{path}: an Analyze header; name it NAME.hdr next to its NAME.img "
                         "(the voxels are in the .img file)")
    return _read_nib(path, path, limits, "analyze")


def _voxels(img: Any, named: Path) -> npt.NDArray[Any]:
    """The voxels of a nibabel image ``img`` loaded from ``named``, as nibabel reads them; a
    single-file .nii.gz is inflated by :func:`segloop.io.inflate.open_gzip` (python-isal when
    installed: half the CPU of nibabel's own gzip reader, the same bytes). Called after the
    header's limits are checked, so nothing past the declared size is ever inflated."""
    if not (named.name.lower().endswith(".nii.gz") and isinstance(img, nib.Nifti1Image)):
        return np.asanyarray(img.dataobj)
    with open_gzip(named) as fh:
        holder = nib.FileHolder(fileobj=fh)
        again: Any = type(img).from_file_map({"image": holder}, mmap=False)
        if again.shape != img.shape or again.get_data_dtype() != img.get_data_dtype():
            raise InputError(f"{named}: the NIfTI header changed while it was read")
        return np.asanyarray(again.dataobj)


def _read_nib(named: Path, path: Path, limits: ReadLimits, fmt: str = "nifti") -> Volume:
    """Any image nibabel reads (NIfTI, Analyze, MGH, MINC 1, ...), ``named`` as nibabel needs."""
    kind = "NIfTI" if fmt == "nifti" else "image"
    try:
        img: Any = nib.load(str(named), mmap=False)
    except (EOFError, zlib.error) as exc:
        raise InputError(f"{path}: the {kind} file is truncated ({one_line(exc)})") from exc
    except Exception as exc:
        raise InputError(f"{path}: not a readable {kind} image ({one_line(exc)})") from exc
    hdr: Any = img.header
    full_shape = tuple(int(s) for s in img.shape)
    shape = shape3(path, full_shape)
    check_bytes(path, full_shape, itemsize_of(hdr.get_data_dtype()), limits)
    try:
        data = _voxels(img, named)
    except inflate_errors() as exc:
        raise InputError(
            f"{path}: the NIfTI file is truncated or corrupt (voxel data ends early: {one_line(exc)}); "
            "re-export or re-download it"
        ) from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the NIfTI voxel data ({one_line(exc)})") from exc
    data = np.asarray(data).reshape(shape)
    if data.dtype == np.float64 and hdr.get_data_dtype() != np.float64:
        data = data.astype(np.float32)  # scl_slope scaling made float64; float32 is plenty
    meta: dict[str, Any] = {"nibabel_class": type(img).__name__}
    modality = None
    if isinstance(hdr, nib.Nifti1Header):  # NIfTI-2 headers derive from it too
        descrip = hdr["descrip"].item().decode("latin-1", "replace").strip("\x00 ")
        modality = modality_from_text(descrip) if descrip else None
        meta.update({
            "qform_code": int(hdr["qform_code"]),
            "sform_code": int(hdr["sform_code"]),
            "descrip": descrip,
            "nifti_version": 2 if isinstance(hdr, nib.Nifti2Header) else 1,
        })
    if modality:
        meta["modality_source"] = "header"
    return Volume(
        data=data,
        affine=np.asarray(img.affine, dtype=np.float64),
        source_format=fmt,
        modality=modality,
        source_path=path,
        meta=meta,
        header=hdr.copy() if isinstance(hdr, nib.Nifti1Header) else None,
    )


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
    shape = shape3(path, data.shape)
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


def _read_npz(path: Path, limits: ReadLimits) -> Volume:
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
        try:
            with zf.open(key + ".npy") as fh:
                shape, dtype = _npy_header(fh)
        except (ValueError, OSError, zipfile.BadZipFile, EOFError, zlib.error, RuntimeError,
                NotImplementedError) as exc:
            raise InputError(f"{path}: cannot read the .npz arrays ({one_line(exc)})") from exc
    shape3(path, shape)
    check_bytes(path, shape, dtype.itemsize, limits)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = z[key]
            affine = z["affine"] if "affine" in keys else None
            spacing = z["spacing"] if "spacing" in keys else None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, zlib.error, RuntimeError,
            NotImplementedError) as exc:
        raise InputError(f"{path}: cannot read the .npz arrays ({one_line(exc)})") from exc
    return _volume_from_array(path, data, affine, spacing, "npz")


def _read_npy(path: Path, limits: ReadLimits) -> Volume:
    with open(path, "rb") as fh:
        shape, dtype = _npy_header(fh)
    shape3(path, shape)
    check_bytes(path, shape, dtype.itemsize, limits)
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(
            f"{path}: cannot read the .npy array, it may be truncated ({one_line(exc)})"
        ) from exc
    return _volume_from_array(path, data, None, None, "npy")


def _dicom_voxels(limits: ReadLimits) -> int | None:
    """The voxel limit for DICOM, whose header check counts voxels: ``max_bytes`` at 2 bytes a
    voxel (16-bit pixels) folded in."""
    if limits.max_bytes is None:
        return limits.max_voxels
    by_bytes = limits.max_bytes // 2
    return by_bytes if limits.max_voxels is None else min(limits.max_voxels, by_bytes)


def _read_dicom(path: Path, limits: ReadLimits, series_uid: str | None = None) -> Volume:
    vol = read_dicom_series(path, series_uid=series_uid, max_voxels=_dicom_voxels(limits))
    check_bytes(path, vol.shape, vol.data.dtype.itemsize, limits)
    return vol


def _itk(fmt: str) -> Reader:
    return lambda p, limits: read_itk(p, limits, fmt)


def _read_any(path: Path, limits: ReadLimits, refusal: UnsupportedFormatError) -> Volume:
    """Content segloop does not sniff: SimpleITK (reader chosen by name and content), then
    nibabel; ``refusal`` (the sniffer's message) when neither reads it."""
    import SimpleITK as sitk

    probe = sitk.ImageFileReader()
    probe.SetFileName(str(path))
    try:
        probe.ReadImageInformation()
    except RuntimeError:
        pass
    else:
        return read_itk(path, limits, "itk")
    try:
        nib.load(str(path))
    except Exception:
        raise refusal from None
    return _read_nib(path, path, limits, "nibabel")


#: format name (as returned by detect_format) -> reader(path, limits)
READERS: dict[str, Reader] = {
    "nifti": _read_nifti,
    "analyze": _read_analyze,
    "nrrd": _itk("nrrd"),
    "mha": _itk("mha"),
    "gipl": _itk("gipl"),
    "gipl-gz": _itk("gipl-gz"),
    "vtk": _itk("vtk"),
    "hdf5": _itk("itk"),
    "minc1": lambda p, limits: _read_nib(p, p, limits, "minc1"),
    "dicom": _read_dicom,
    "dicom-zip": _read_dicom,
    "npz": _read_npz,
    "npy": _read_npy,
}

#: formats whose header may name a separate data file (checked against ``data_root``)
_DETACHABLE = ("nifti", "analyze", "nrrd", "mha")


def load_volume(
    path: str | Path,
    *,
    series_uid: str | None = None,
    max_voxels: int | None = DEFAULT_MAX_VOXELS,
    max_bytes: int | None = None,
    data_root: Path | None = None,
) -> Volume:
    """Read a 3D image into a :class:`Volume` (array in source order, affine voxel -> RAS mm).

    path: a NIfTI/Analyze/NRRD/MHA/MHD/GIPL/VTK/MINC/.npz/.npy file, a DICOM series folder,
        a .zip of a series or one DICOM file of a series; the format is sniffed from the
        content. Content the sniffer does not know is offered to SimpleITK, then nibabel
        (only when ``data_root`` is None).
    series_uid: which DICOM series to read when a folder holds several.
    max_voxels / max_bytes: refuse images declaring more voxels / more decoded bytes (voxels x
        bytes of the stored dtype) than this, checked from the header before data is read;
        None disables a check.
    data_root: when set (the service's upload path), a header's separate data file (NRRD
        ``data file``, MetaImage ``ElementDataFile``, the ``.img`` of a ``.hdr``) must resolve
        inside this folder, and only sniffed formats are read. None (the CLI, on a user's own
        files) lets a header name any file.

    Raises InputError (missing/unreadable/truncated/2D/4D/non-finite/DICOM problems),
    UnsupportedFormatError and VolumeTooLargeError, each with a one-line message.
    """
    p = Path(path).expanduser()
    limits = ReadLimits(max_voxels=max_voxels, max_bytes=max_bytes, data_root=data_root)
    try:
        fmt = detect_format(p)
    except UnsupportedFormatError as exc:
        if data_root is not None or series_uid is not None:
            raise
        vol = _read_any(p, limits, exc)
        fmt = vol.source_format
    else:
        if data_root is not None and fmt in ("hdf5", "dicom-zip"):
            raise InputError(f"{p}: a {fmt} file is not read from an upload (it can hold or "
                             "point at other files); send a .nii.gz, .nrrd, .mha or a DICOM zip")
        if data_root is not None and fmt in _DETACHABLE:
            check_confined(p, fmt, data_root)
        if fmt in ("dicom", "dicom-zip"):
            vol = _read_dicom(p, limits, series_uid)
        elif series_uid is not None:
            raise InputError(f"{p}: --series/series_uid only applies to DICOM input, found {fmt}")
        else:
            reader = READERS.get(fmt)
            if reader is None:  # pragma: no cover - detect_format only returns known names
                raise UnsupportedFormatError(f"{p}: no reader for format {fmt}")
            vol = reader(p, limits)
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
