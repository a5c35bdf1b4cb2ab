"""Recognise an image format from a file's content (magic bytes), never from its name.

``detect_format(path)`` returns one of ``"nifti" | "analyze" | "nrrd" | "mha" | "gipl" |
"gipl-gz" | "vtk" | "minc1" | "hdf5" | "dicom" | "dicom-zip" | "npz" | "npy"`` or raises
:class:`~segloop.errors.UnsupportedFormatError` saying what was found.
Only the first few kilobytes are read. Imports nothing heavier than the standard library.
"""

from __future__ import annotations

import gzip
import os
import re
import struct
import zipfile
import zlib
from pathlib import Path

from segloop.errors import InputError, UnsupportedFormatError

__all__ = ["SUPPORTED_FORMATS", "check_readable", "detect_format", "modality_from_text", "one_line"]

#: human-readable list used in error messages
SUPPORTED_FORMATS = (
    "NIfTI (.nii, .nii.gz, .hdr/.img), Analyze (.hdr/.img), NRRD (.nrrd, .nhdr), MetaImage "
    "(.mha, .mhd), GIPL (.gipl, .gipl.gz), VTK (.vtk), MINC (.mnc), a DICOM series (folder, .zip "
    "or one file of the series), NumPy .npz/.npy and, on the command line, any other 3D scalar "
    "image SimpleITK or nibabel reads (e.g. FreeSurfer .mgz)"
)

_GIPL_MAGIC = b"\xef\xff\xe9\xb0"  # big-endian 0xefffe9b0 at byte 252
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

_MHA_KEY = re.compile(rb"^\s*(ObjectType|NDims|DimSize|ElementType)\s*=", re.MULTILINE)


def one_line(exc: BaseException | str, limit: int = 300) -> str:
    """An exception's text collapsed onto one line (for wrapping library errors)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def modality_from_text(text: str) -> str | None:
    """``CT`` / ``MR`` / ``PT`` / ``US`` when a header's free text names a modality, else None."""
    m = re.search(r"(?<![A-Za-z])(CT|MRI?|PET|PT|US)(?![A-Za-z])", text.upper())
    if m is None:
        return None
    return {"MRI": "MR", "PET": "PT"}.get(m.group(1), m.group(1))


def check_readable(path: Path) -> None:
    """Raise InputError when ``path`` does not exist or cannot be read by this process."""
    if not path.exists():
        hint = ""
        if path.parent.exists():
            near = sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name[:3]))
            if near:
                hint = f" (did you mean {', '.join(near[:3])}?)"
        raise InputError(f"{path}: no such file or folder{hint}")
    if not os.access(path, os.R_OK) or (path.is_dir() and not os.access(path, os.X_OK)):
        raise InputError(f"{path}: permission denied (cannot read it as user {_user()})")


def _user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:  # pragma: no cover - exotic environments
        return str(os.getuid())


def _is_nifti_header(head: bytes) -> str | None:
    """'nifti1' / 'nifti2' when ``head`` starts a NIfTI header, else None."""
    if len(head) >= 348:
        for endian in "<>":
            (size,) = struct.unpack(endian + "i", head[:4])
            if size == 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
                return "nifti1"
            if size == 540 and head[4:8] in (b"n+2\x00", b"ni2\x00"):
                return "nifti2"
    return None


def _is_analyze_header(head: bytes) -> bool:
    """An Analyze 7.5 header: ``sizeof_hdr`` 348 (either byte order), no NIfTI magic."""
    if len(head) < 348 or _is_nifti_header(head):
        return False
    return any(struct.unpack(e + "i", head[:4])[0] == 348 for e in "<>") and \
        any(1 <= struct.unpack(e + "h", head[40:42])[0] <= 7 for e in "<>")


def _describe(head: bytes) -> str:
    """A short description of unknown content for the error message."""
    if not head:
        return "an empty file"
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head[:256])
    if printable > 0.95 * min(len(head), 256):
        first = head[:40].decode("latin-1").splitlines()[0] if head.strip() else ""
        return f"a text file starting with {first!r}"
    if head[:4] == b"\x89PNG":
        return "a PNG picture (2D)"
    if head[:3] == b"\xff\xd8\xff":
        return "a JPEG picture (2D)"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "a TIFF file"
    return f"binary data starting with bytes {head[:8].hex(' ')}"


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format of the file or folder at ``path``, sniffed from its content.

    A folder is taken as a DICOM series folder (the DICOM reader checks its content). Raises
    InputError when it is missing or unreadable and UnsupportedFormatError otherwise.
    """
    p = Path(path)
    check_readable(p)
    if p.is_dir():
        return "dicom"
    try:
        with open(p, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise InputError(f"{p}: cannot read the file ({exc.strerror or one_line(exc)})") from exc
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(p, "rb") as gz:
                inner = gz.read(560)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"{p}: gzip data is truncated or corrupt ({one_line(exc)})") from exc
        if _is_nifti_header(inner):
            return "nifti"
        if inner[252:256] == _GIPL_MAGIC:
            return "gipl-gz"
        raise UnsupportedFormatError(
            f"{p}: found gzip-compressed {_describe(inner)}, not a NIfTI image; "
            f"segloop reads {SUPPORTED_FORMATS}"
        )
    if _is_nifti_header(head):
        return "nifti"
    if head[:4] == b"NRRD":
        return "nrrd"
    if head[128:132] == b"DICM":
        return "dicom"
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        try:
            with zipfile.ZipFile(p) as zf:
                names = [i.filename for i in zf.infolist() if not i.is_dir()]
        except (zipfile.BadZipFile, OSError) as exc:
            raise InputError(f"{p}: the zip archive is truncated or corrupt ({one_line(exc)})") from exc
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        return "dicom-zip"
    if head[:6] == b"\x93NUMPY":
        return "npy"
    if head[252:256] == _GIPL_MAGIC:
        return "gipl"
    if head.startswith(b"# vtk DataFile"):
        return "vtk"
    if head[:4] in (b"CDF\x01", b"CDF\x02"):
        return "minc1"
    if head[:8] == _HDF5_MAGIC:
        return "hdf5"
    if _is_analyze_header(head):
        return "analyze"
    if _MHA_KEY.search(head[:2048]):
        return "mha"
    raise UnsupportedFormatError(
        f"{p}: found {_describe(head)}, which is not a supported image; segloop reads {SUPPORTED_FORMATS}"
    )
