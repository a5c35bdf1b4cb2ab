"""Read the formats SimpleITK reads (NRRD, MetaImage, GIPL, VTK, MINC, Analyze, ...) into a Volume.

:func:`read_itk` picks SimpleITK's reader for a sniffed format, checks the header (3D, one
component, voxel and byte limits, detached data files inside ``limits.data_root``) with
``ReadImageInformation`` before any voxel is read, then converts ITK's LPS geometry to a RAS
affine. ITK chooses some readers by file name, so a file whose name does not match its
content is read through a correctly named link in a temporary folder. Imports SimpleITK
lazily; never torch.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.ism, segloop.train, segloop.eval, segloop.jobs, segloop.datastore, segloop.engines,
segloop.models (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import contextlib
import locale
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from segloop.errors import InputError
from segloop.io.limits import ReadLimits, check_bytes, shape3
from segloop.io.sniff import modality_from_text
from segloop.io.volume import Volume

__all__ = ["ITK_IO", "read_itk"]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: sniffed format -> (SimpleITK ImageIO, the file name ending that IO expects)
ITK_IO: dict[str, tuple[str, str]] = {
    "nrrd": ("NrrdImageIO", ".nrrd"),
    "mha": ("MetaImageIO", ".mha"),
    "gipl": ("GiplImageIO", ".gipl"),
    "gipl-gz": ("GiplImageIO", ".gipl.gz"),
    "vtk": ("VTKImageIO", ".vtk"),
    "minc": ("MINCImageIO", ".mnc"),
}

#: SimpleITK pixel id -> bytes per voxel (scalar images)
_ITEMSIZE = {"8-bit": 1, "16-bit": 2, "32-bit": 4, "64-bit": 8}


def itk_msg(exc: Exception) -> str:
    """The useful line of a SimpleITK exception."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if "Description" in ln or "error" in ln.lower()]
    return (useful or lines or ["unknown error"])[-1][:200]


def _itemsize(pixel: str) -> int:
    for key, n in _ITEMSIZE.items():
        if key in pixel:
            return n
    return 8


@contextlib.contextmanager
def _locale_kept() -> Iterator[None]:
    """Restore the process locale after an ITK read: ITK's VTK reader sets ``LC_ALL=C`` and
    leaves it, which turns Python's default text encoding into ASCII for the whole process (a
    server that read one VTK upload then failed on every non-ASCII text file)."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        if locale.setlocale(locale.LC_ALL) != saved:
            locale.setlocale(locale.LC_ALL, saved)


def read_itk(path: Path, limits: ReadLimits, fmt: str) -> Volume:
    """Read ``path`` (sniffed as ``fmt``, a key of :data:`ITK_IO`, or ``"itk"``: let SimpleITK
    pick a reader from the name and content) into a Volume (array (i, j, k), RAS affine)."""
    with _locale_kept():
        return _read_named(path, limits, fmt)


def _read_named(path: Path, limits: ReadLimits, fmt: str) -> Volume:
    io_name, ending = ITK_IO.get(fmt, ("", ""))
    if ending and not path.name.lower().endswith(ending) and fmt not in ("nrrd", "mha"):
        with tempfile.TemporaryDirectory(prefix="segloop-") as tmp:
            link = Path(tmp) / ("image" + ending)
            try:
                link.symlink_to(path.resolve())
            except OSError:
                shutil.copyfile(path, link)
            return _read(link, path, limits, fmt, io_name)
    return _read(path, path, limits, fmt, io_name)


def _read(named: Path, path: Path, limits: ReadLimits, fmt: str, io_name: str) -> Volume:
    import SimpleITK as sitk

    label = fmt.upper() if fmt != "itk" else "image"
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(named))
    if io_name:
        reader.SetImageIO(io_name)
    else:  # name the format after the reader SimpleITK picks (MINCImageIO -> "minc")
        picked = str(sitk.ImageFileReader.GetImageIOFromFileName(str(named)))
        fmt = picked.removesuffix("ImageIO").lower() or fmt
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"{path}: not a readable {label} header ({itk_msg(exc)})") from exc
    size = [int(s) for s in reader.GetSize()]
    ncomp = int(reader.GetNumberOfComponents())
    if ncomp > 1:
        raise InputError(
            f"{path}: found a {len(size)}D image of shape {tuple(size)} with {ncomp} "
            "components per voxel (vector / multi-frame); segloop needs one 3D scalar volume"
        )
    shape3(path, size)
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    check_bytes(path, size, _itemsize(pixel), limits)
    keys = {k: reader.GetMetaData(k) for k in reader.GetMetaDataKeys()}
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise InputError(
            f"{path}: cannot read the {label} voxel data, the file may be truncated ({itk_msg(exc)})"
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
            modality = modality_from_text(v.replace("MET_MOD_", " "))
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
