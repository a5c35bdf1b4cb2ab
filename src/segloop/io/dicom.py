"""Read a DICOM image series (a folder, a .zip or one file of the series) into a Volume.

The entry point of the DICOM readers: it finds the files and their series
(:mod:`segloop.io.dicomfiles`), chooses one (MultipleSeriesError when several and none was
named) and stacks its slices (:mod:`segloop.io.dicomstack`: slice order, spacing checks,
affine, rescaled pixels). Array axes: i = column, j = row, k = slice along the normal.
Uses pydicom only; must not import torch.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pydicom

from segloop.errors import InputError
from segloop.io.dicomfiles import (
    DicomSource,
    MultipleSeriesError,
    SeriesInfo,
    group_series,
    is_image,
    list_dicom_series,
    looks_like_dicom,
    read_dataset,
)
from segloop.io.dicomstack import assemble_series
from segloop.io.sniff import one_line
from segloop.io.volume import Volume

__all__ = [
    "MultipleSeriesError",
    "SeriesInfo",
    "list_dicom_series",
    "looks_like_dicom",
    "read_dataset",
    "read_dicom_series",
]


def read_dicom_series(
    path: str | Path, *, series_uid: str | None = None, max_voxels: int | None = None
) -> Volume:
    """Read one DICOM image series into a Volume (see module docstring for axes/affine).

    ``path``: a folder (searched recursively), a .zip, or one file (then its folder is read
    and the file's series is chosen unless ``series_uid`` says otherwise). Raises
    MultipleSeriesError when several series are found and ``series_uid`` is None.
    """
    p = Path(path)
    single = p.is_file() and not zipfile.is_zipfile(p)
    if single and series_uid is None:
        try:
            ds0 = pydicom.dcmread(p, stop_before_pixels=True, force=True)
        except Exception as exc:
            raise InputError(f"{p}: not a readable DICOM file ({one_line(exc)})") from exc
        if not is_image(ds0):
            mod = ds0.get("Modality", "?")
            hint = "; read it with segloop.io.read_dicom_seg" if mod == "SEG" else ""
            raise InputError(f"{p}: DICOM file ({mod}) has no pixel data (not an image){hint}")
        series_uid = str(ds0.get("SeriesInstanceUID", ""))
        p = p.parent
    src = DicomSource(p, max_voxels)
    try:
        return _read(src, p, series_uid, max_voxels)
    finally:
        src.close()


def _read(src: DicomSource, p: Path, series_uid: str | None, max_voxels: int | None) -> Volume:
    headers = list(src.headers())
    if not headers:
        raise InputError(f"{p}: no DICOM files found")
    series = group_series(headers)
    if not series:
        mods = sorted({str(ds.get("Modality", "?")) for _, ds in headers})
        raise InputError(
            f"{p}: no DICOM image series found, only {', '.join(mods)} object(s) without "
            "pixel data to segment (a DICOM-SEG is read with segloop.io.read_dicom_seg)"
        )
    if series_uid is not None:
        chosen = [s for s in series if s.series_uid == series_uid]
        if not chosen:
            raise InputError(
                f"{p}: no series with UID {series_uid}; found: " + "; ".join(s.describe() for s in series)
            )
        info = chosen[0]
    elif len(series) > 1:
        raise MultipleSeriesError(
            f"{p}: found {len(series)} DICOM series: "
            + "; ".join(s.describe() for s in series)
            + ". Pick one with --series UID",
            series,
        )
    else:
        info = series[0]
    wanted = set(info.files)
    items = [(r, ds) for r, ds in headers if r in wanted]
    return assemble_series(src, info, items, max_voxels)
