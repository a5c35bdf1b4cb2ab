"""Which separate data files an image header names, and keeping them inside one folder.

Some formats split an image into a header and a data file the header names: NRRD (``data
file:`` in a ``.nhdr``), MetaImage (``ElementDataFile`` in a ``.mhd``) and Analyze / NIfTI
pairs (``x.hdr`` + ``x.img``). A reader that follows such a name reads whatever file it points
to, so an uploaded header naming ``/etc/passwd`` or another job's volume would hand that file's
bytes back as voxels. :func:`data_refs` lists the names a header points to (without touching
them), :func:`check_confined` refuses any that does not resolve inside a given folder, and
:func:`rewrite_data_ref` replaces the name in a header (the upload path uses it so that only
names segloop generated ever reach the filesystem). Imports only the standard library and
segloop.errors; never numpy, SimpleITK or nibabel.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from segloop.errors import InputError

__all__ = ["DataRef", "RefKind", "check_confined", "data_refs", "header_bytes", "rewrite_data_ref"]

#: the most header bytes looked at (a header longer than this is refused where it matters)
HEADER_LIMIT = 64 * 1024

_MHA_DATA = re.compile(rb"^[ \t]*ElementDataFile[ \t]*[=:][ \t]*(.*?)[ \t]*\r?$",
                       re.MULTILINE | re.IGNORECASE)


class RefKind(StrEnum):
    """How a header names its voxel data."""

    FILE = "file"        # one data file, by name (relative to the header's folder, or absolute)
    LIST = "list"        # NRRD / MetaImage ``LIST``: one file per slice, named in the header
    PATTERN = "pattern"  # a printf pattern with a range (``slice%03d.raw 1 100 1``)


@dataclass(frozen=True)
class DataRef:
    """A data file a header points to: ``name`` exactly as written in the header."""

    kind: RefKind
    name: str


def header_bytes(path: Path) -> bytes:
    """The first :data:`HEADER_LIMIT` bytes of ``path``."""
    with open(path, "rb") as fh:
        return fh.read(HEADER_LIMIT)


def _nrrd_header_lines(head: bytes) -> list[str]:
    """The NRRD header's lines (magic line included), up to the blank line that ends it."""
    text = head.replace(b"\r\n", b"\n")
    end = text.find(b"\n\n")
    if end >= 0:
        text = text[:end]
    return text.decode("latin-1").split("\n")


def _is_data_file_field(line: str) -> bool:
    key, sep, _ = line.partition(":")
    return bool(sep) and not line.lstrip().startswith("#") and ":=" not in line and \
        "".join(key.split()).lower() == "datafile"


def _ref(value: str) -> DataRef:
    parts = value.split()
    if parts and parts[0].upper() == "LIST":
        return DataRef(RefKind.LIST, value)
    if "%" in value and len(parts) >= 4:
        return DataRef(RefKind.PATTERN, value)
    return DataRef(RefKind.FILE, value)


def _nrrd_refs(head: bytes) -> list[DataRef]:
    return [_ref(line.partition(":")[2].strip())
            for line in _nrrd_header_lines(head)[1:] if _is_data_file_field(line)]


def _mha_refs(head: bytes) -> list[DataRef]:
    values = [m.group(1).decode("latin-1").strip() for m in _MHA_DATA.finditer(head)]
    return [_ref(v) for v in values if v.upper() != "LOCAL"]


def _pair_refs(path: Path) -> list[DataRef]:
    """Analyze / NIfTI pair: ``x.hdr`` reads ``x.img`` (nibabel and ITK pick it by name)."""
    name = path.name
    low = name.lower()
    for hdr, img in ((".hdr.gz", ".img.gz"), (".hdr", ".img")):
        if low.endswith(hdr):
            return [DataRef(RefKind.FILE, name[: -len(hdr)] + img)]
    return []


def data_refs(path: Path, fmt: str) -> list[DataRef]:
    """The separate data files the header at ``path`` (sniffed format ``fmt``) points to.

    ``nrrd``: its ``data file`` field; ``mha``: ``ElementDataFile`` unless ``LOCAL``;
    ``nifti`` / ``analyze`` named ``*.hdr``: the ``*.img`` beside it. Empty when the voxels
    are in the file itself. Reads at most :data:`HEADER_LIMIT` bytes.
    """
    if fmt == "nrrd":
        head = header_bytes(path)
        if len(head) >= HEADER_LIMIT and b"\n\n" not in head.replace(b"\r\n", b"\n"):
            raise InputError(f"{path}: the NRRD header is longer than {HEADER_LIMIT} bytes")
        return _nrrd_refs(head)
    if fmt == "mha":
        head = header_bytes(path)
        refs = _mha_refs(head)
        if not refs and _MHA_DATA.search(head) is None and len(head) >= HEADER_LIMIT:
            raise InputError(f"{path}: the MetaImage header is longer than {HEADER_LIMIT} bytes "
                             "(no ElementDataFile line in it)")
        return refs
    if fmt in ("nifti", "analyze"):
        return _pair_refs(path)
    return []


def _inside(target: Path, root: Path) -> bool:
    try:
        Path(os.path.realpath(target)).relative_to(os.path.realpath(root))
    except ValueError:
        return False
    return True


def check_confined(path: Path, fmt: str, root: Path) -> None:
    """InputError unless every data file the header at ``path`` names resolves (symbolic links
    followed) to a regular file inside ``root``; ``LIST`` and pattern references are refused."""
    for ref in data_refs(path, fmt):
        if ref.kind is not RefKind.FILE:
            raise InputError(
                f"{path.name}: the header names its data as {ref.kind.value} {ref.name!r}; "
                "an upload must carry one data file (or the voxels in the file itself)"
            )
        target = path.parent / ref.name
        if not _inside(target, root) or not Path(os.path.realpath(target)).is_file():
            raise InputError(
                f"{path.name}: the header names a data file {ref.name!r} that is not part of "
                "the upload; upload a self-contained file (.nii.gz, .nrrd, .mha) or a .zip "
                "holding the header and its data file"
            )


def rewrite_data_ref(head: bytes, fmt: str, new_name: str) -> bytes:
    """The header text ``head`` (the whole header file) with its data file renamed ``new_name``.

    Only ``nrrd`` and ``mha`` headers name their data file inside; anything after the header
    (attached data) is dropped, since the data now lives in ``new_name``.
    """
    if fmt == "nrrd":
        lines = [f"data file: {new_name}" if _is_data_file_field(line) else line
                 for line in _nrrd_header_lines(head)]
        return ("\n".join(lines) + "\n").encode("latin-1")
    if fmt == "mha":
        m = _MHA_DATA.search(head)
        if m is None:
            raise InputError("the MetaImage header has no ElementDataFile line")
        return head[: m.start()] + f"ElementDataFile = {new_name}\n".encode()
    raise InputError(f"a {fmt} header does not name its data file")
