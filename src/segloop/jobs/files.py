"""On-disk layout of a job and the file operations behind the API: ingest an upload, store label maps.

Layout under ``SEGLOOP_HOME`` (see docs/service.md)::

    jobs/<job_id>/source/upload.<ext>     the uploaded file, renamed by its sniffed format
    jobs/<job_id>/source/dicom/...        or the extracted DICOM series of a .zip upload
    jobs/<job_id>/canonical.nii.gz        closest-canonical RAS volume (what GET /volume serves)
    jobs/<job_id>/versions/v0001.npz      label map of version 1: ``labels`` uint8 (X, Y, Z) canonical
    datastore/manifest.csv                reviewed masks, in the `segloop eval` manifest format
    datastore/cases/<job_id>_v<n>/{image,label}.nii.gz, meta.json

Client-supplied names never reach the filesystem: every path is built from a job UUID and a
fixed name. Every write goes to a temporary name first and is renamed into place. Imports
numpy, nibabel and segloop.io; never torch, FastAPI or Celery.
"""

from __future__ import annotations

import csv
import gzip
import io
import shutil
import stat
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from segloop import fsio
from segloop.errors import InputError, VolumeTooLargeError
from segloop.io.volume import Volume

__all__ = [
    "DATASTORE_COLUMNS",
    "append_datastore_rows",
    "atomic_write_bytes",
    "canonical_path",
    "check_zip_members",
    "encode_labels",
    "ingest_upload",
    "load_canonical",
    "load_labels",
    "load_source",
    "read_mask_upload",
    "save_labels",
    "write_canonical",
]

LabelMap = npt.NDArray[np.uint8]

DATASTORE_COLUMNS = ("case_id", "image", "label", "label_value", "structure", "modality",
                     "patient_id", "job_id", "version", "reviewed_by")

_EXT = {"nifti": "upload.nii", "nrrd": "upload.nrrd", "mha": "upload.mha", "npz": "upload.npz",
        "npy": "upload.npy", "dicom": "upload.dcm"}


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (:func:`segloop.fsio.atomic_write_bytes`)."""
    fsio.atomic_write_bytes(path, data)


def check_zip_members(zf: zipfile.ZipFile, max_bytes: int) -> list[zipfile.ZipInfo]:
    """The regular-file members of ``zf``; InputError for unsafe names or links, size limit too.

    Rejects absolute paths, ``..`` components, drive letters and symbolic links; raises
    VolumeTooLargeError when the declared uncompressed size exceeds ``max_bytes``.
    """
    files: list[zipfile.ZipInfo] = []
    total = 0
    for info in zf.infolist():
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
        total += info.file_size
        if total > max_bytes:
            raise VolumeTooLargeError(
                f"the zip archive inflates to more than {max_bytes} bytes (the upload limit)"
            )
        files.append(info)
    if not files:
        raise InputError("the zip archive is empty: zip the folder of one DICOM series")
    return files


def _extract_zip(src: Path, dest: Path, max_bytes: int) -> None:
    """Extract a zip safely into ``dest`` with flat, generated file names; counts real bytes."""
    dest.mkdir(parents=True)
    written = 0
    with zipfile.ZipFile(src) as zf:
        for i, info in enumerate(check_zip_members(zf, max_bytes)):
            with zf.open(info) as fin, open(dest / f"{i:06d}.dcm", "wb") as fout:
                while chunk := fin.read(1 << 20):
                    written += len(chunk)
                    if written > max_bytes:
                        raise VolumeTooLargeError(
                            f"the zip archive inflates to more than {max_bytes} bytes"
                        )
                    fout.write(chunk)


def _load_volume(path: Path, max_voxels: int) -> Volume:
    from segloop.io import load_volume

    vol: Volume = load_volume(path, max_voxels=max_voxels)
    return vol


def ingest_upload(upload: Path, dest: Path, *, max_bytes: int, max_voxels: int) -> tuple[
    Volume, str
]:
    """Move an uploaded file into ``dest/source`` and read it; returns (volume, relative source).

    The format is sniffed from the content (segloop.io.sniff). A zip is taken as a DICOM
    series and extracted safely. ``dest`` must not exist yet; the caller removes it on error.
    Writes ``dest/canonical.nii.gz``.
    """
    from segloop.io.sniff import detect_format

    fmt = detect_format(upload)
    src_dir = dest / "source"
    src_dir.mkdir(parents=True)
    if fmt == "dicom-zip":
        _extract_zip(upload, src_dir / "dicom", max_bytes)
        upload.unlink()
        rel = "source/dicom"
    else:
        name = _EXT.get(fmt, "upload.bin")
        if fmt == "nifti":
            with open(upload, "rb") as fh:
                if fh.read(2) == b"\x1f\x8b":
                    name = "upload.nii.gz"
        shutil.move(str(upload), src_dir / name)
        rel = f"source/{name}"
    vol = _load_volume(dest / rel, max_voxels)
    write_canonical(vol, canonical_path(dest))
    return vol, rel


def canonical_path(job_dir: Path) -> Path:
    """``<job_dir>/canonical.nii.gz``."""
    return job_dir / "canonical.nii.gz"


def write_canonical(vol: Volume, path: Path) -> None:
    """Write the closest-canonical RAS view of ``vol`` as NIfTI (atomically)."""
    can = vol.canonical()
    img = nib.Nifti1Image(np.asarray(can.data), can.affine)
    img.set_qform(can.affine, code=1)
    img.set_sform(can.affine, code=1)
    atomic_write_bytes(path, gzip.compress(img.to_bytes(), compresslevel=1))


def load_canonical(job_dir: Path, modality: str | None) -> Volume:
    """The job's canonical volume as a :class:`Volume` (axes x, y, z; RAS)."""
    img: Any = nib.load(str(canonical_path(job_dir)))
    data = np.asarray(img.dataobj)
    return Volume(data=data, affine=np.asarray(img.affine, np.float64), source_format="nifti",
                  modality=modality, source_path=canonical_path(job_dir))


def load_source(job_dir: Path, rel: str, max_voxels: int) -> Volume:
    """The uploaded volume on its source grid (for writing results there)."""
    return _load_volume(job_dir / rel, max_voxels)


def encode_labels(labels: LabelMap) -> bytes:
    """The bytes of the .npz :func:`save_labels` writes for a label map ``(X, Y, Z)`` uint8."""
    npy = io.BytesIO()
    np.save(npy, np.ascontiguousarray(labels, np.uint8))
    buf = io.BytesIO()  # an .npz whose member is deflated fast (level 1): masks compress well
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("labels.npy", npy.getvalue())
    return buf.getvalue()


def save_labels(path: Path, labels: LabelMap) -> None:
    """Store a canonical label map ``(X, Y, Z)`` uint8 as a compressed .npz (atomically)."""
    atomic_write_bytes(path, encode_labels(labels))


def load_labels(path: Path) -> LabelMap:
    """Read a label map written by :func:`save_labels`."""
    with np.load(path) as z:
        return np.asarray(z["labels"], np.uint8)


def read_mask_upload(data: bytes, canonical: Volume, source: Volume | None) -> LabelMap:
    """Parse an uploaded NIfTI label map on the canonical or the source grid -> canonical uint8.

    The grid is recognised by shape and affine; InputError when it matches neither.
    """
    try:
        raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        img: Any = nib.Nifti1Image.from_bytes(raw)
        arr = np.asarray(img.dataobj)
    except Exception as exc:
        raise InputError(f"the mask is not a readable NIfTI file ({exc})") from exc
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise InputError(f"the mask must be 3D, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 255:
        raise InputError("mask values must be integer labels 0..255")
    aff = np.asarray(img.affine, np.float64)
    if arr.shape == canonical.shape and np.allclose(aff, canonical.affine, atol=1e-3):
        return arr.astype(np.uint8)
    if source is not None and arr.shape == source.shape and np.allclose(
        aff, source.affine, atol=1e-3
    ):
        return np.asarray(source.source_to_canonical(arr.astype(np.uint8)), np.uint8)
    if arr.shape == canonical.shape:
        return arr.astype(np.uint8)
    raise InputError(
        f"the mask has shape {arr.shape}, but this job's volume is {canonical.shape} "
        f"(canonical) / {source.shape if source else '?'} (as uploaded)"
    )


def append_datastore_rows(datastore: Path, rows: Sequence[Mapping[str, object]]) -> Path:
    """Append rows to ``datastore/manifest.csv`` (header written once); returns the manifest path."""
    manifest = datastore / "manifest.csv"
    old = manifest.read_text() if manifest.exists() else ""
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=list(DATASTORE_COLUMNS))
    if not old:
        w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in DATASTORE_COLUMNS})
    atomic_write_bytes(manifest, (old + out.getvalue()).encode())
    return manifest
