"""Unpack an uploaded .zip safely: a DICOM series, or one image in a multi-file format.

Every member is checked before anything is inflated (names that escape the archive,
symbolic links, encrypted members, unknown compression methods, too many members, a declared
total above the limit) and inflated with a running byte count, so a lying central directory
cannot make it write more. Corrupt archives (bad CRC, broken deflate data) become InputError.

Multi-file images (``x.mhd`` + ``x.raw``, ``x.nhdr`` + ``x.raw``, Analyze / NIfTI-pair
``x.hdr`` + ``x.img``) are recognised by member names; the header's data file is looked up
among the archive's members, and both are written under names segloop generates, the header
rewritten to name the generated data file. So no name from inside an upload ever reaches the
filesystem, and a header naming ``/etc/passwd``, ``../x`` or a member that is not there is
refused. Imports segloop.io (sniffing, header parsing); never numpy, torch or FastAPI.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.ism, segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import posixpath
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from segloop.errors import InputError, VolumeTooLargeError
from segloop.io.detached import DataRef, RefKind, data_refs, header_bytes, rewrite_data_ref
from segloop.io.sniff import detect_format, one_line

__all__ = ["ZipLimits", "check_entry_count", "check_members", "declared_entries",
           "extract_series", "find_image", "unpack_image"]

#: compression methods the standard library inflates
_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                      zipfile.ZIP_LZMA})
#: member name endings that start a (possibly multi-file) image other than DICOM
_IMAGE_ENDINGS = (".nii", ".nii.gz", ".hdr", ".mhd", ".mha", ".nhdr", ".nrrd", ".gipl",
                  ".gipl.gz", ".vtk")
#: errors the zipfile module raises on corrupt or unsupported members
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError,
               OSError, ValueError)


@dataclass(frozen=True)
class ZipLimits:
    """max_bytes: the most all members may inflate to; max_entries: the most members."""

    max_bytes: int
    max_entries: int


def _too_big(limits: ZipLimits) -> VolumeTooLargeError:
    return VolumeTooLargeError(
        f"the zip archive inflates to more than {limits.max_bytes / 2**20:.0f} MiB, the limit "
        "(SEGLOOP_MAX_VOLUME_BYTES); refusing the upload"
    )


def declared_entries(path: Path) -> int | None:
    """The member count a zip's end-of-central-directory record declares (zip64 too), read
    from the file's tail without parsing the directory; None when no record is found."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        fh.seek(max(0, size - (1 << 16) - 22))
        tail = fh.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) < at + 22:
            return None
        count = int.from_bytes(tail[at + 10:at + 12], "little")
        if count != 0xFFFF or at < 20 or tail[at - 20:at - 16] != b"PK\x06\x07":
            return count
        fh.seek(int.from_bytes(tail[at - 12:at - 4], "little"))
        rec = fh.read(56)
        if rec[:4] != b"PK\x06\x06" or len(rec) < 40:
            return count
        return int.from_bytes(rec[32:40], "little")


def check_entry_count(path: Path, limits: ZipLimits) -> None:
    """InputError when the zip declares more than ``limits.max_entries`` members (cheap: the
    central directory is not parsed, so 50,000 empty members cost nothing)."""
    n = declared_entries(path)
    if n is not None and n > limits.max_entries:
        raise InputError(f"the zip archive has {n} members, more than the limit of "
                         f"{limits.max_entries} (SEGLOOP_MAX_ZIP_ENTRIES)")


def check_members(zf: zipfile.ZipFile, limits: ZipLimits) -> list[zipfile.ZipInfo]:
    """The regular-file members of ``zf`` after the checks above (nothing is inflated)."""
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise InputError(f"the zip archive has {len(infos)} members, more than the limit of "
                         f"{limits.max_entries} (SEGLOOP_MAX_ZIP_ENTRIES)")
    files: list[zipfile.ZipInfo] = []
    total = 0
    for info in infos:
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
            raise InputError(
                f"zip entry {info.filename!r} points outside the archive; refusing the upload"
            )
        if stat.S_ISLNK(info.external_attr >> 16):
            raise InputError(f"zip entry {info.filename!r} is a symbolic link; refusing the upload")
        if info.is_dir():
            continue
        if info.flag_bits & 0x1:
            raise InputError(f"zip entry {info.filename!r} is encrypted; upload an archive "
                             "without a password")
        if info.compress_type not in _METHODS:
            raise InputError(f"zip entry {info.filename!r} uses compression method "
                             f"{info.compress_type}, which segloop cannot inflate (use deflate)")
        total += info.file_size
        if total > limits.max_bytes:
            raise _too_big(limits)
        files.append(info)
    if not files:
        raise InputError("the zip archive is empty: zip the folder of one DICOM series")
    return files


def _open(src: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(src)
    except _ZIP_ERRORS as exc:
        raise InputError(f"the zip archive is corrupt ({one_line(exc)})") from exc


def _copy(zf: zipfile.ZipFile, info: zipfile.ZipInfo, out: Path, budget: list[int],
          limits: ZipLimits) -> None:
    """Inflate one member to ``out``; ``budget[0]`` counts the bytes written so far."""
    try:
        with zf.open(info) as fin, open(out, "xb") as fout:
            while chunk := fin.read(1 << 20):
                budget[0] += len(chunk)
                if budget[0] > limits.max_bytes:
                    raise _too_big(limits)
                fout.write(chunk)
    except VolumeTooLargeError:
        raise
    except _ZIP_ERRORS as exc:
        raise InputError(f"zip entry {info.filename!r} is corrupt or unreadable "
                         f"({one_line(exc)}); re-create the archive") from exc


def _is_image_member(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and "__MACOSX/" not in name and \
        base.lower().endswith(_IMAGE_ENDINGS)


def find_image(src: Path, limits: ZipLimits) -> str | None:
    """The one member that is a non-DICOM image header, None for a DICOM series archive;
    InputError when the archive holds several images."""
    with _open(src) as zf:
        names = [i.filename for i in check_members(zf, limits) if _is_image_member(i.filename)]
    if len(names) > 1:
        raise InputError(f"the zip archive holds {len(names)} images ({', '.join(names[:4])}); "
                         "upload one image per job")
    return names[0] if names else None


def extract_series(src: Path, dest: Path, limits: ZipLimits) -> None:
    """Extract every member into ``dest`` as ``000000.dcm``, ``000001.dcm``, ... (a DICOM series)."""
    dest.mkdir(parents=True)
    budget = [0]
    with _open(src) as zf:
        for i, info in enumerate(check_members(zf, limits)):
            _copy(zf, info, dest / f"{i:06d}.dcm", budget, limits)


def _ending(name: str) -> str:
    low = name.lower()
    return next(e for e in sorted(_IMAGE_ENDINGS, key=len, reverse=True) if low.endswith(e))


def _member_for(ref: DataRef, header: str, members: dict[str, zipfile.ZipInfo]) -> zipfile.ZipInfo:
    """The archive member a header's data file name refers to (relative to the header)."""
    if ref.kind is not RefKind.FILE:
        raise InputError(f"{header}: the header names its data as {ref.kind.value} "
                         f"{ref.name!r}; an upload must carry one data file per image")
    name = ref.name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise InputError(f"{header}: the header names the data file {ref.name!r} by an absolute "
                         "path; a header in an upload may only name a file beside it in the zip")
    full = posixpath.normpath(posixpath.join(posixpath.dirname(header), name))
    if full.startswith("../") or full == "..":
        raise InputError(f"{header}: the header names the data file {ref.name!r} outside the "
                         "zip archive; refusing the upload")
    info = members.get(full)
    if info is None:
        raise InputError(f"{header}: the header names the data file {ref.name!r}, which is not "
                         "in the zip archive; add it next to the header")
    return info


def unpack_image(src: Path, dest: Path, header: str, limits: ZipLimits) -> Path:
    """Extract the image whose header is member ``header`` into ``dest`` under generated
    names (``image.<ext>`` and its data file); returns the header's path there."""
    dest.mkdir(parents=True)
    budget = [0]
    ending = _ending(header)
    with _open(src) as zf:
        members = {i.filename.replace("\\", "/"): i for i in check_members(zf, limits)}
        out = dest / ("image" + ending)
        _copy(zf, members[header], out, budget, limits)
        if ending in (".hdr",):  # Analyze / NIfTI pair: the voxels are in NAME.img
            img = header[: -len(".hdr")] + ".img"
            info = members.get(img) or next(
                (i for n, i in members.items() if n.lower() == img.lower()), None)
            if info is None:
                raise InputError(f"{header}: an Analyze / NIfTI-pair header without its .img "
                                 f"({posixpath.basename(img)} is not in the zip archive)")
            _copy(zf, info, dest / "image.img", budget, limits)
            return out
        fmt = detect_format(out)
        if fmt not in ("nrrd", "mha"):
            return out
        refs = data_refs(out, fmt)
        if not refs:
            return out
        if len(refs) > 1:
            raise InputError(f"{header}: the header names {len(refs)} data files; one expected")
        info = _member_for(refs[0], header, members)
        if info.filename.replace("\\", "/") == header:
            raise InputError(f"{header}: the header names itself as its data file")
        _copy(zf, info, dest / "image.raw", budget, limits)
    out.write_bytes(rewrite_data_ref(header_bytes(out), fmt, "image.raw"))
    return out
