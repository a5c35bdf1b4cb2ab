"""Read a DICOM image series (a folder, a .zip or one file of the series) into a Volume.

Slices are sorted by their position along the slice normal; the affine comes from
ImageOrientationPatient / ImagePositionPatient / PixelSpacing (LPS) converted to RAS+.
Array axes: i = column (along the row direction), j = row, k = slice (sorted along the
normal), so ``data[:, :, k] == pixel_array(slice k).T`` with RescaleSlope/Intercept applied.

Zip archives are never extracted to disk: members are read in memory after the member
names and the total uncompressed size (from the central directory) have been checked.
A slice inside a zip is referred to by the virtual path ``archive.zip/member/name``;
:func:`read_dataset` understands such paths. Uses pydicom only; must not import torch.
"""

from __future__ import annotations

import io
import logging
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from segloop.errors import InputError, UnsupportedFormatError, VolumeTooLargeError
from segloop.io.sniff import one_line
from segloop.io.volume import DicomRef, Volume

__all__ = [
    "MultipleSeriesError",
    "SeriesInfo",
    "list_dicom_series",
    "looks_like_dicom",
    "read_dataset",
    "read_dicom_series",
]

log = logging.getLogger(__name__)

#: modalities of DICOM objects that are not image series (skipped when looking for images)
NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "SR", "PR", "KO", "REG", "RTPLAN", "DOC"})
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: bytes allowed per voxel in a zip's uncompressed total, plus a fixed allowance for headers
_ZIP_BYTES_PER_VOXEL = 8
_ZIP_HEADER_ALLOWANCE = 16 * 1024 * 1024


@dataclass(frozen=True)
class SeriesInfo:
    """One DICOM series found in a folder or archive.

    files: the series' files (unsorted; virtual ``archive.zip/member`` paths for zips).
    """

    series_uid: str
    study_uid: str
    description: str
    modality: str
    n_images: int
    rows: int
    columns: int
    files: tuple[Path, ...]

    def describe(self) -> str:
        """One-line summary: UID, description, number of images, modality."""
        desc = self.description or "no description"
        uid = self.series_uid or '<blank SeriesInstanceUID: pass --series "">'
        return f"{uid} ({desc!r}, {self.n_images} images, {self.modality or '?'})"


class MultipleSeriesError(InputError):
    """A folder or archive holds several image series and none was chosen."""

    def __init__(self, message: str, series: Sequence[SeriesInfo]) -> None:
        super().__init__(message)
        self.series = list(series)


# --------------------------------------------------------------------------- sources


class _Source:
    """Files of a folder, a zip archive or a single file, read as pydicom datasets."""

    def __init__(self, path: Path, max_voxels: int | None) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if path.is_dir():
            self.refs = [
                f
                for f in sorted(path.rglob("*"))
                if f.is_file() and not f.name.startswith(".") and f.name.upper() != "DICOMDIR"
            ]
        elif zipfile.is_zipfile(path):
            self._zip = zipfile.ZipFile(path)
            self.refs = [path / m for m in _safe_members(self._zip, path, max_voxels)]
        else:
            self.refs = [path]

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def read(self, ref: Path, *, header_only: bool, force: bool = False) -> Dataset:
        if self._zip is not None:
            member = ref.relative_to(self.path).as_posix()
            data = self._zip.read(member)
            return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=header_only, force=force)
        return pydicom.dcmread(ref, stop_before_pixels=header_only, force=force)

    def head(self, ref: Path, n: int = 132) -> bytes:
        """The first ``n`` bytes of a file (or zip member)."""
        if self._zip is not None:
            with self._zip.open(ref.relative_to(self.path).as_posix()) as fh:
                return bytes(fh.read(n))
        with open(ref, "rb") as fh:
            return fh.read(n)

    def headers(self) -> Iterator[tuple[Path, Dataset]]:
        """(ref, header) for every file that parses as DICOM; other files are skipped."""
        for ref in self.refs:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # odd-but-readable headers
                    ds = self.read(ref, header_only=True)
            except InvalidDicomError:
                # files written without the 128-byte preamble: accept when they parse cleanly
                if ref.suffix.lower() not in ("", ".dcm", ".ima"):
                    continue
                try:
                    if not looks_like_dicom(self.head(ref)):
                        continue  # never force-parse arbitrary bytes (slow, and not DICOM)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", UserWarning)
                        ds = self.read(ref, header_only=True, force=True)
                except Exception:
                    continue
                if "SeriesInstanceUID" not in ds:
                    continue
            except PermissionError as exc:
                raise InputError(f"{ref}: permission denied while reading the series") from exc
            except Exception as exc:  # a corrupt file is logged and skipped, not raised
                log.warning("skipping %s: not readable as DICOM (%s)", ref, exc)
                continue
            yield ref, ds


#: value representations of explicit-VR DICOM
_VRS = frozenset(b"AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV "
                 b"TM UC UI UL UN UR US UT UV".split())


def looks_like_dicom(head: bytes) -> bool:
    """Whether the first bytes of a file start a DICOM dataset: the ``DICM`` preamble, or
    (files written without it) a first element of group 0002 or 0008 in little-endian
    explicit VR, or implicit VR with a plausible length. Zeros and random bytes do not pass."""
    if head[128:132] == b"DICM":
        return True
    if len(head) < 8:
        return False
    group = int.from_bytes(head[0:2], "little")
    elem = int.from_bytes(head[2:4], "little")
    if group not in (0x0002, 0x0008) or elem > 0x0100:
        return False
    if head[4:6] in _VRS:
        return True
    return int.from_bytes(head[4:8], "little") < 4096


def _safe_members(zf: zipfile.ZipFile, path: Path, max_voxels: int | None) -> list[str]:
    """Member file names after the path and size checks (nothing is inflated here)."""
    names: list[str] = []
    total = 0
    for info in zf.infolist():
        name = info.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
            raise InputError(
                f"{path}: zip member {name!r} has an unsafe path (absolute or with '..'); "
                "refusing to read this archive"
            )
        total += info.file_size
        if not info.is_dir() and not parts[-1].startswith(".") and "__MACOSX" not in parts:
            names.append(name)
    if max_voxels is not None:
        limit = max_voxels * _ZIP_BYTES_PER_VOXEL + _ZIP_HEADER_ALLOWANCE
        if total > limit:
            raise VolumeTooLargeError(
                f"{path}: the zip archive inflates to {total / 2**20:.0f} MiB, above the limit of "
                f"{limit / 2**20:.0f} MiB for max_voxels={max_voxels}; raise the voxel limit "
                "if this archive is trusted"
            )
    return sorted(names)


def read_dataset(ref: str | Path, *, header_only: bool = False) -> Dataset:
    """Read one DICOM file; ``ref`` may be a virtual ``archive.zip/member`` path."""
    p = Path(ref)
    if p.is_file():
        return pydicom.dcmread(p, stop_before_pixels=header_only, force=True)
    for parent in p.parents:
        if parent.is_file() and zipfile.is_zipfile(parent):
            with zipfile.ZipFile(parent) as zf:
                data = zf.read(p.relative_to(parent).as_posix())
            return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=header_only, force=True)
    raise InputError(f"{p}: DICOM file not found (was the source series moved?)")


# --------------------------------------------------------------------------- series listing


def _is_image(ds: Dataset) -> bool:
    return "Rows" in ds and str(ds.get("Modality", "")).upper() not in NON_IMAGE_MODALITIES


def _group(headers: Sequence[tuple[Path, Dataset]]) -> list[SeriesInfo]:
    groups: dict[str, list[tuple[Path, Dataset]]] = {}
    for ref, ds in headers:
        if _is_image(ds):
            groups.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((ref, ds))
    out = []
    for uid, items in groups.items():
        first = items[0][1]
        out.append(
            SeriesInfo(
                series_uid=uid,
                study_uid=str(first.get("StudyInstanceUID", "")),
                description=str(first.get("SeriesDescription", "")),
                modality=str(first.get("Modality", "")),
                n_images=len(items),
                rows=int(first.Rows),
                columns=int(first.Columns),
                files=tuple(r for r, _ in items),
            )
        )
    return sorted(out, key=lambda s: (-s.n_images, s.series_uid))


def list_dicom_series(path: str | Path) -> list[SeriesInfo]:
    """The image series in a DICOM folder, zip archive or single file (most images first)."""
    p = Path(path)
    src = _Source(p, None)
    try:
        return _group(list(src.headers()))
    finally:
        src.close()


# --------------------------------------------------------------------------- reading


def _floats(ds: Dataset, name: str, n: int, ref: Path) -> npt.NDArray[np.float64]:
    val = ds.get(name)
    if val is None or len(val) != n:
        raise InputError(f"{ref}: DICOM image lacks {name}; cannot place it in space")
    return np.asarray([float(v) for v in val], dtype=np.float64)


def _check_spacing(d: npt.NDArray[np.float64], uid: str) -> float:
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
        if not _is_image(ds0):
            mod = ds0.get("Modality", "?")
            hint = "; read it with segloop.io.read_dicom_seg" if mod == "SEG" else ""
            raise InputError(f"{p}: DICOM file ({mod}) has no pixel data (not an image){hint}")
        series_uid = str(ds0.get("SeriesInstanceUID", ""))
        p = p.parent
    src = _Source(p, max_voxels)
    try:
        return _read(src, p, series_uid, max_voxels)
    finally:
        src.close()


def _read(src: _Source, p: Path, series_uid: str | None, max_voxels: int | None) -> Volume:
    headers = list(src.headers())
    if not headers:
        raise InputError(f"{p}: no DICOM files found")
    series = _group(headers)
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
    return _assemble(src, info, items, max_voxels)


def _assemble(
    src: _Source,
    info: SeriesInfo,
    items: list[tuple[Path, Dataset]],
    max_voxels: int | None,
) -> Volume:
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
    step = _check_spacing(d, uid)
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
