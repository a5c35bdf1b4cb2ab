"""DICOM files and the series they hold: a folder (searched recursively), a .zip or one file
read as pydicom headers, grouped into image series (:class:`SeriesInfo`).

Zip archives are never extracted to disk: members are read in memory after the member
names and the total uncompressed size (from the central directory) have been checked.
A slice inside a zip is referred to by the virtual path ``archive.zip/member/name``;
:func:`read_dataset` understands such paths. Uses pydicom only; must not import torch or the
other segloop.io.dicom* modules.
"""

from __future__ import annotations

import io
import logging
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from segloop.errors import InputError, VolumeTooLargeError

__all__ = [
    "NON_IMAGE_MODALITIES",
    "DicomSource",
    "MultipleSeriesError",
    "SeriesInfo",
    "group_series",
    "is_image",
    "list_dicom_series",
    "looks_like_dicom",
    "read_dataset",
]

log = logging.getLogger(__name__)

#: modalities of DICOM objects that are not image series (skipped when looking for images)
NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "SR", "PR", "KO", "REG", "RTPLAN", "DOC"})
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


class DicomSource:
    """Files of a folder, a zip archive or a single file, read as pydicom datasets
    (``refs``: the candidate files, virtual ``archive.zip/member`` paths for zips)."""

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


def is_image(ds: Dataset) -> bool:
    """Whether a header is an image (has rows and is not a SEG, RTSTRUCT, SR, ...)."""
    return "Rows" in ds and str(ds.get("Modality", "")).upper() not in NON_IMAGE_MODALITIES


def group_series(headers: Sequence[tuple[Path, Dataset]]) -> list[SeriesInfo]:
    """The image series among ``(ref, header)`` pairs, most images first."""
    groups: dict[str, list[tuple[Path, Dataset]]] = {}
    for ref, ds in headers:
        if is_image(ds):
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
    src = DicomSource(p, None)
    try:
        return group_series(list(src.headers()))
    finally:
        src.close()
