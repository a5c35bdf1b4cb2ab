"""On-disk layout of a job and the file operations behind the API: ingest an upload, store label maps.

Layout under ``SEGLOOP_HOME`` (see docs/service.md)::

    jobs/<job_id>/source/upload.<ext>     the uploaded file, renamed by its sniffed format
    jobs/<job_id>/source/dicom/...        or the extracted DICOM series of a .zip upload
    jobs/<job_id>/source/image/image.*    or a multi-file image of a .zip (header + data file)
    jobs/<job_id>/canonical.nii           closest-canonical RAS volume (what GET /volume serves),
                                          uncompressed (jobs made before 2026-11 have .nii.gz)
    jobs/<job_id>/preview.nii             a subsampled copy of a large volume (shown first;
                                          every 2f-th slice since 2026-11, every f-th before),
                                          uncompressed (jobs made before 2026-11: .nii.gz)
    jobs/<job_id>/versions/v0001.npz      label map of version 1: ``labels`` uint8 (X, Y, Z) canonical,
                                          or (since 2026-11) only its non-zero box: ``labels``
                                          the box, ``origin`` its first voxel, ``shape`` the map's
    datastore/...                         reviewed cases: owned by segloop.datastore

Client-supplied names never reach the filesystem: every path is built from a job UUID and a
fixed name, and a header's data file is read only from inside the job's ``source/`` folder
(``load_volume(..., data_root=...)``; see segloop.io.detached and segloop.jobs.unpack).
Every write goes to a temporary name first and is renamed into place. Imports numpy,
nibabel and segloop.io; never torch, FastAPI or Celery.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.ism, segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import gzip
import io
import shutil
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from segloop import fsio
from segloop.config import Settings
from segloop.errors import InputError, VolumeTooLargeError
from segloop.io.detached import data_refs
from segloop.io.volume import Volume
from segloop.jobs.unpack import (
    ZipLimits,
    check_entry_count,
    extract_series,
    find_image,
    unpack_image,
)

__all__ = [
    "CANONICAL_NAME",
    "UploadLimits",
    "atomic_write_bytes",
    "canonical_path",
    "encode_labels",
    "frame_of_reference",
    "ingest_upload",
    "is_dicom",
    "label_box",
    "load_canonical",
    "load_labels",
    "load_source",
    "preview_path",
    "preview_steps",
    "read_mask_upload",
    "read_mask_upload_2d",
    "read_seg_upload",
    "save_labels",
    "write_canonical",
]

LabelMap = npt.NDArray[np.uint8]

_EXT = {"nifti": "upload.nii", "nrrd": "upload.nrrd", "mha": "upload.mha", "npz": "upload.npz",
        "npy": "upload.npy", "dicom": "upload.dcm", "gipl": "upload.gipl",
        "gipl-gz": "upload.gipl.gz", "vtk": "upload.vtk", "minc1": "upload.mnc"}
_ZIP_HEADER_ALLOWANCE = 64 * 1024 * 1024


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (:func:`segloop.fsio.atomic_write_bytes`)."""
    fsio.atomic_write_bytes(path, data)


@dataclass(frozen=True)
class UploadLimits:
    """Limits of one upload's ingest (see the fields of :class:`segloop.config.Settings`)."""

    max_voxels: int
    max_volume_bytes: int
    max_zip_entries: int

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadLimits:
        """The limits ``settings`` configure."""
        return cls(settings.max_voxels, settings.max_volume_bytes, settings.max_zip_entries)

    def zip(self) -> ZipLimits:
        """What a zip may inflate to: one volume plus 64 MiB of per-file headers."""
        return ZipLimits(self.max_volume_bytes + _ZIP_HEADER_ALLOWANCE, self.max_zip_entries)


def _load_volume(path: Path, limits: UploadLimits, data_root: Path) -> Volume:
    from segloop.io import load_volume

    vol: Volume = load_volume(path, max_voxels=limits.max_voxels,
                              max_bytes=limits.max_volume_bytes, data_root=data_root)
    return vol


def _is_pair_header(path: Path) -> bool:
    """A NIfTI-1/2 header whose magic says the voxels are in a separate ``.img``."""
    with open(path, "rb") as fh:
        head = fh.read(560)
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as gz:
                head = gz.read(560)
        except (OSError, EOFError, zlib.error):
            return False
    return head[344:348] == b"ni1\x00" or head[4:8] == b"ni2\x00"


def _check_single(path: Path, fmt: str) -> None:
    """Refuse a single uploaded file that is not self-contained (its voxels elsewhere)."""
    zip_hint = "upload a .zip holding the header and its data file"
    if fmt == "analyze" or (fmt == "nifti" and _is_pair_header(path)):
        raise InputError(f"{path}: an Analyze / NIfTI-pair header (.hdr) without its .img; "
                         f"{zip_hint}, or a single .nii.gz")
    if fmt == "hdf5":
        raise InputError(f"{path}: HDF5-based images (MINC 2, ITK .h5) are not accepted as "
                         "uploads (HDF5 can point at other files); convert to .nii.gz or .nrrd")
    refs = data_refs(path, fmt)
    if refs:
        raise InputError(f"{path}: the {fmt.upper()} header names a separate data file "
                         f"{refs[0].name!r}; uploads must be self-contained: {zip_hint}, "
                         "or a single .nrrd / .mha / .nii.gz with the voxels inside")


def ingest_upload(upload: Path, dest: Path, limits: UploadLimits) -> tuple[Volume, str]:
    """Move an uploaded file into ``dest/source`` and read it; returns (volume, relative source).

    The format is sniffed from the content (segloop.io.sniff). A picture (PNG, JPEG, TIFF,
    BMP) or a single-frame DICOM file becomes a 2D job (segloop.jobs.image2d_job). A single file must be
    self-contained (no header naming a separate data file). A zip is a DICOM series, or one
    image in a multi-file format whose data file is inside the zip (segloop.jobs.unpack).
    Everything is read with ``data_root`` = the job's source folder, so no header can make
    the reader open a file outside it. ``dest`` must not exist yet; the caller removes it on
    error. Writes ``dest/preview.nii`` (a large volume) and ``dest/canonical.nii``, unflushed:
    the caller commits ``dest`` with :func:`segloop.fsio.replace_dir`, which flushes it all.
    """
    from segloop.io.sniff import detect_format
    from segloop.jobs.image2d_job import ingest_2d, upload_is_2d

    with open(upload, "rb") as fh:
        if fh.read(2) == b"PK":
            check_entry_count(upload, limits.zip())
    kind = upload_is_2d(upload)
    if kind is not None:  # a picture or a single-frame DICOM: a 2D job (one slice)
        got = ingest_2d(upload, dest, kind, limits.max_voxels)
        write_canonical(got.volume, canonical_path(dest), durable=False)
        return got.volume, got.rel
    fmt = detect_format(upload)
    src_dir = dest / "source"
    src_dir.mkdir(parents=True)
    if fmt == "dicom-zip":
        header = find_image(upload, limits.zip())
        if header is None:
            extract_series(upload, src_dir / "dicom", limits.zip())
            rel = "source/dicom"
        else:
            out = unpack_image(upload, src_dir / "image", header, limits.zip())
            rel = out.relative_to(dest).as_posix()
        upload.unlink()
    else:
        _check_single(upload, fmt)
        name = _EXT.get(fmt, "upload.bin")
        if fmt == "nifti":
            with open(upload, "rb") as fh:
                if fh.read(2) == b"\x1f\x8b":
                    name = "upload.nii.gz"
        shutil.move(str(upload), src_dir / name)
        rel = f"source/{name}"
    vol = _load_volume(dest / rel, limits, src_dir)
    write_canonical(vol, canonical_path(dest), durable=False)
    return vol, rel


def canonical_path(job_dir: Path) -> Path:
    """``<job_dir>/canonical.nii``, or ``canonical.nii.gz`` for a job made before the canonical
    volume was stored uncompressed (the one that exists; ``.nii`` for a new job)."""
    plain = job_dir / CANONICAL_NAME
    legacy = job_dir / "canonical.nii.gz"
    return legacy if not plain.exists() and legacy.exists() else plain


#: the canonical volume's file name: uncompressed, so ingest does not spend seconds deflating a
#: large volume before the job exists, and readers (the viewer, the engines) need no inflating
CANONICAL_NAME = "canonical.nii"


#: volumes above this many voxels also get a preview (what the viewer shows first)
PREVIEW_MIN_VOXELS = 8 << 20
#: in-plane, a preview keeps every f-th voxel, f the smallest integer that would bring the
#: volume under this many voxels with the same step along every axis
PREVIEW_VOXELS = 4 << 20
#: ... and every (PREVIEW_SLICE_STEP * f)-th axial slice: NiiVue renders a volume into its
#: texture one pass per slice, which in a CPU WebGL (SwiftShader) made most of the 0.5-0.7 s
#: between the preview's arrival and its first image; half the slices cut that to ~0.4 s,
#: while the axial view the page opens on keeps its in-plane detail (docs/web.md, *First image*)
PREVIEW_SLICE_STEP = 2


def preview_steps(shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """The preview's step along (x, y, z) for a volume of ``shape``: ``(f, f, 2f)`` (see
    PREVIEW_VOXELS, PREVIEW_SLICE_STEP); None when the volume is small enough to need none
    (PREVIEW_MIN_VOXELS or fewer voxels)."""
    n = int(np.prod(shape))
    if n <= PREVIEW_MIN_VOXELS:
        return None
    f = int(np.ceil((n / PREVIEW_VOXELS) ** (1 / 3)))
    return f, f, PREVIEW_SLICE_STEP * f


def preview_path(job_dir: Path) -> Path:
    """``<job_dir>/preview.nii`` (only for volumes over PREVIEW_MIN_VOXELS), or
    ``preview.nii.gz`` for a job made before the preview was stored uncompressed (the one that
    exists; ``.nii`` for a new job)."""
    plain = job_dir / PREVIEW_NAME
    legacy = job_dir / "preview.nii.gz"
    return legacy if not plain.exists() and legacy.exists() else plain


#: the preview's file name: uncompressed like the canonical volume -- deflating it cost ~0.4 s
#: of CPU before the job existed, to save a few MB on a local download (the viewer, NiiVue,
#: inflates by the gzip magic, so an older job's .nii.gz loads the same)
PREVIEW_NAME = "preview.nii"


def _image(data: npt.NDArray[Any], affine: npt.NDArray[Any]) -> Any:
    img = nib.Nifti1Image(np.asarray(data), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img


def _nifti_gz(data: npt.NDArray[Any], affine: npt.NDArray[Any]) -> bytes:
    return gzip.compress(bytes(_image(data, affine).to_bytes()), compresslevel=1)


def _write_nifti(path: Path, data: npt.NDArray[Any], affine: npt.NDArray[Any],
                 durable: bool) -> None:
    """``path`` (.nii: uncompressed; .nii.gz: gzip) atomically; an uncompressed one is streamed
    from the array to the file, never held whole in memory as bytes (for a 150 MB CT the copy
    cost ~0.2 s of CPU before the job existed)."""
    if path.name.endswith(".gz"):
        fsio.atomic_write_bytes(path, _nifti_gz(data, affine), durable=durable)
        return
    with fsio.atomic_path(path, durable=durable) as tmp:
        _image(data, affine).to_filename(str(tmp))


def write_canonical(vol: Volume, path: Path, *, durable: bool = True) -> None:
    """Write the closest-canonical RAS view of ``vol`` as NIfTI (atomically; gzip only when
    ``path`` ends in .gz), and beside it, first, an uncompressed preview of a large volume:
    every f-th voxel in-plane and every 2f-th slice (:func:`preview_steps`), on the same
    physical extent, so the viewer can show a first image long before the full volume has
    arrived. ``durable=False`` skips the per-file ``fsync`` (still
    atomic): for a folder that is flushed as a whole before it becomes visible (ingest's job
    folder, :func:`segloop.fsio.replace_dir`), where a second flush of the same data is waste."""
    can = vol.canonical()
    data = np.asarray(can.data)
    steps = preview_steps(data.shape)
    if steps is not None:
        fx, fy, fz = steps
        small = np.ascontiguousarray(data[::fx, ::fy, ::fz])
        aff = np.asarray(can.affine, np.float64) @ np.diag([fx, fy, fz, 1.0])
        _write_nifti(path.with_name(PREVIEW_NAME), small, aff, durable)
    _write_nifti(path, data, can.affine, durable)


def load_canonical(job_dir: Path, modality: str | None) -> Volume:
    """The job's canonical volume as a :class:`Volume` (axes x, y, z; RAS)."""
    img: Any = nib.load(str(canonical_path(job_dir)))
    data = np.asarray(img.dataobj)
    return Volume(data=data, affine=np.asarray(img.affine, np.float64), source_format="nifti",
                  modality=modality, source_path=canonical_path(job_dir))


def load_source(job_dir: Path, rel: str, max_voxels: int) -> Volume:
    """The uploaded volume on its source grid (for writing results there); read with the job's
    source folder as ``data_root`` (a header there can name no file outside it)."""
    from segloop.io import load_volume

    vol: Volume = load_volume(job_dir / rel, max_voxels=max_voxels, data_root=job_dir / "source")
    return vol


def label_box(labels: LabelMap) -> tuple[slice, slice, slice] | None:
    """The smallest box ``(X, Y, Z)`` holding every non-zero voxel of a label map, or None
    when it is all zeros. Two passes over contiguous memory: the rows' maxima give the x
    range, the x slab's maximum over x the y and z ranges."""
    if labels.size == 0:
        return None
    nx = labels.shape[0]
    xs = np.flatnonzero(labels.reshape(nx, -1).max(axis=1))
    if xs.size == 0:
        return None
    x0, x1 = int(xs[0]), int(xs[-1]) + 1
    yz = labels[x0:x1].max(axis=0)
    ys, zs = np.flatnonzero(yz.max(axis=1)), np.flatnonzero(yz.max(axis=0))
    return slice(x0, x1), slice(int(ys[0]), int(ys[-1]) + 1), slice(int(zs[0]), int(zs[-1]) + 1)


def encode_labels(labels: LabelMap) -> bytes:
    """The bytes of the .npz :func:`save_labels` writes for a label map ``(X, Y, Z)`` uint8.

    Only the box around the non-zero voxels is stored (``labels``, with ``origin`` and the
    map's ``shape``): a mask is usually a small part of its volume, and deflating the zeros
    around it was most of the cost of saving a version (224 ms of CPU for 512x512x300)."""
    labels = np.ascontiguousarray(labels, np.uint8)
    box = label_box(labels)
    if box is None:
        box = (slice(0, 0),) * 3
    members = {"labels": labels[box], "origin": np.array([b.start for b in box], np.int64),
               "shape": np.array(labels.shape, np.int64)}
    buf = io.BytesIO()  # an .npz whose members are deflated fast (level 1): masks compress well
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, arr in members.items():
            npy = io.BytesIO()
            np.save(npy, np.ascontiguousarray(arr))
            zf.writestr(f"{name}.npy", npy.getvalue())
    return buf.getvalue()


def save_labels(path: Path, labels: LabelMap) -> None:
    """Store a canonical label map ``(X, Y, Z)`` uint8 as a compressed .npz (atomically)."""
    atomic_write_bytes(path, encode_labels(labels))


def load_labels(path: Path) -> LabelMap:
    """Read a label map written by :func:`save_labels` (a whole map, or its non-zero box)."""
    with np.load(path) as z:
        part = np.asarray(z["labels"], np.uint8)
        if "shape" not in z.files:  # a whole map (versions written before 2026-11)
            return part
        shape = tuple(int(n) for n in z["shape"])
        origin = [int(o) for o in z["origin"]]
    if len(shape) != 3 or len(origin) != 3 or part.ndim != 3:
        raise InputError(f"{path.name}: not a label map file")
    out = np.zeros(shape, np.uint8)
    out[tuple(slice(o, o + n) for o, n in zip(origin, part.shape, strict=True))] = part
    return out


def read_mask_upload(data: bytes, canonical: Volume, source: Volume | None) -> LabelMap:
    """Parse an uploaded NIfTI label map on the canonical or the source grid -> canonical uint8.

    The grid is recognised by shape and affine; InputError when it matches neither. A gzip
    body is inflated with a running limit (a label map of this job's size, at most 8 bytes a
    voxel, plus 1 MiB of header), so a small gzip bomb costs nothing.
    """
    limit = int(np.prod(canonical.shape)) * 8 + (1 << 20)
    raw = _gunzip_limited(data, limit) if data[:2] == b"\x1f\x8b" else data
    if len(raw) > limit:
        raise VolumeTooLargeError(f"the mask is {len(raw)} bytes, more than a label map of this "
                                  f"job's {canonical.shape} volume can be")
    try:
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


def read_mask_upload_2d(data: bytes, canonical: Volume) -> LabelMap:
    """A 2D job's uploaded mask -> canonical ``(W, H, 1)`` uint8: a PNG of the picture's size
    (grey label values; 255 in a 0/255 mask counts as label 1), or a NIfTI on the canonical
    grid (:func:`read_mask_upload`)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return read_mask_upload(data, canonical, None)
    from PIL import Image, UnidentifiedImageError

    w, h = canonical.shape[0], canonical.shape[1]
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.size != (w, h):
                raise InputError(f"the mask PNG is {im.size[0]} x {im.size[1]} pixels, but this "
                                 f"image is {w} x {h}")
            arr = np.asarray(im.convert("L") if im.mode not in ("L", "1", "P") else im)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise InputError(f"the mask is not a readable PNG file ({exc})") from exc
    arr = np.asarray(arr, np.uint8)
    if set(np.unique(arr).tolist()) <= {0, 255}:
        arr = (arr > 0).astype(np.uint8)
    return np.ascontiguousarray(arr.T[:, :, None])


def is_dicom(data: bytes) -> bool:
    """Whether an upload is a DICOM file (the ``DICM`` preamble tag)."""
    return data[128:132] == b"DICM"


def read_seg_upload(data: bytes, canonical: Volume, tmp_dir: Path,
                    source: Volume | None = None) -> tuple[LabelMap, dict[int, str]]:
    """Read an uploaded DICOM-SEG onto the job's canonical grid -> (uint8 labels, segment
    number -> name). Frames are placed by position, so a SEG of this series (or of any series
    in the same frame of reference) lands where it belongs; one outside the volume, one in
    another frame of reference than ``source``'s DICOM series, and malformed, truncated or
    oversized ones (pixels, inflated bytes) are refused with one line naming "the upload"."""
    from segloop.io.dicomseg import read_dicom_seg

    tmp_dir.mkdir(parents=True, exist_ok=True)
    path = tmp_dir / f"seg-{uuid.uuid4().hex}.dcm"
    try:
        path.write_bytes(data)
        seg = read_dicom_seg(path, reference=canonical,
                             frame_of_reference=frame_of_reference(source))
    except InputError as exc:
        raise type(exc)(str(exc).replace(str(path), "the upload")) from None
    finally:
        path.unlink(missing_ok=True)
    if not seg.labels.any():
        raise InputError("the DICOM-SEG has no voxel inside this job's volume: is it a "
                         "segmentation of another series?")
    if max(seg.segments, default=0) > 255:
        raise InputError("the DICOM-SEG has more than 255 segments")
    return seg.labels.astype(np.uint8), seg.segments


def frame_of_reference(vol: Volume | None) -> str | None:
    """The FrameOfReferenceUID of a DICOM volume's first source file (None when not DICOM,
    not said or unreadable)."""
    if vol is None or vol.dicom is None or not vol.dicom.files:
        return None
    import pydicom

    try:
        ds = pydicom.dcmread(vol.dicom.files[0], stop_before_pixels=True,
                             specific_tags=["FrameOfReferenceUID"])
    except Exception:
        return None
    return str(ds.get("FrameOfReferenceUID", "") or "") or None


def _gunzip_limited(data: bytes, limit: int) -> bytes:
    """``gzip.decompress(data)``, VolumeTooLargeError as soon as the output passes ``limit``."""
    d = zlib.decompressobj(wbits=31)
    out = bytearray()
    try:
        chunk = d.decompress(data, 1 << 20)
        while True:
            out += chunk
            if len(out) > limit:
                raise VolumeTooLargeError(
                    f"the gzip mask inflates to more than {limit} bytes, more than a label map "
                    "of this job's volume can be; refusing it"
                )
            if not d.unconsumed_tail:
                break
            chunk = d.decompress(d.unconsumed_tail, 1 << 20)
    except zlib.error as exc:
        raise InputError(f"the mask is not readable gzip data ({exc})") from exc
    return bytes(out)

