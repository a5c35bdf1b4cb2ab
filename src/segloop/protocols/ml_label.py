"""A MONAI Label label upload (``PUT /datastore/label``) read onto its job's canonical grid, checked.

Three kinds of file reach it: a volume on the image's grid (NIfTI, NRRD... as 3D Slicer and
the Python client save it), a DICOM-SEG (placed by position, as ``PUT .../mask`` does) and
OHIF's ``label.bin`` (one byte per voxel of the image as loaded). Whatever does not fit the
image is refused with one line a person can act on, before anything is stored: another shape
or another geometry (origin, spacing, direction), a header declaring more voxels than the
image (a gzip bomb is refused from its header, never inflated), values that are not whole
numbers 0..255, and label values that are neither objects of the image nor named in the
upload's ``label_info``. Imports jobs and io; never engines or torch.
Must not import segloop.cli (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segloop.api.app import Services
from segloop.errors import InputError, VolumeTooLargeError
from segloop.jobs import files
from segloop.jobs.records import JobRecord
from segloop.jobs.store import Principal

__all__ = ["UploadedLabel", "read_label"]

#: how far (in voxels) the label's grid corners may lie from the image's (float32 headers)
_GRID_TOLERANCE = 0.1


@dataclass(frozen=True)
class UploadedLabel:
    """A label map on the job's canonical grid and the segment names it brings (value ->
    name; a DICOM-SEG's segments)."""

    labels: np.ndarray[Any, Any]
    names: dict[int, str] = field(default_factory=dict)


def read_label(svc: Services, who: Principal, job: JobRecord, image_id: str, path: Path,
               label_info: Any) -> UploadedLabel:
    """Read and check the label file ``path`` for image ``image_id`` (its job ``job``)."""
    with open(path, "rb") as fh:
        head = fh.read(256)
    if path.name.endswith(".bin"):
        lab = UploadedLabel(_binary_label(svc, job, path))
    elif files.is_dicom(head):
        can = files.load_canonical(svc.store.job_dir(job.job_id), job.modality)
        labels, names = files.read_seg_upload(path.read_bytes(), can, svc.settings.tmp_dir,
                                              svc.source_volume(job))
        return UploadedLabel(labels, names)  # its values are its (named) segments
    else:
        lab = UploadedLabel(_volume_label(svc, job, image_id, path))
    _check_values(svc, who, job, image_id, lab.labels, label_info)
    return lab


def _binary_label(svc: Services, job: JobRecord, path: Path) -> np.ndarray[Any, Any]:
    """OHIF's ``label.bin``: one uint8 per voxel of the image as loaded, first index
    fastest (the image's i, j, k), as a canonical label map."""
    vol = svc.source_volume(job)
    shape = tuple(int(v) for v in vol.shape)
    n = int(np.prod(shape))
    size = path.stat().st_size
    if size != n:
        raise InputError(f"a .bin label holds one byte per voxel: {n} bytes for the image's "
                         f"shape {list(shape)}, got {size}")
    arr = np.fromfile(path, np.uint8).reshape(shape, order="F")
    return np.asarray(vol.source_to_canonical(arr))


def _volume_label(svc: Services, job: JobRecord, image_id: str, path: Path
                  ) -> np.ndarray[Any, Any]:
    """A label volume on the image's grid, as canonical data. Read from a folder of its own
    (a header may name its data file only there) with the image's voxel count as the limit,
    so a header declaring more is refused before any data is inflated."""
    from segloop.io import load_volume

    folder = svc.settings.tmp_dir / f"label-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    own = folder / f"label{''.join(path.suffixes)[-12:]}"
    try:
        path.rename(own)
        try:
            lab = load_volume(own, max_voxels=int(np.prod(job.source_shape)),
                              data_root=folder)
        except VolumeTooLargeError:
            raise VolumeTooLargeError(f"the label declares more voxels than image {image_id!r} "
                                      f"(shape {job.source_shape}): save it on the image's "
                                      "grid") from None
        except InputError as exc:
            msg = str(exc).replace(str(own), "the label")
            raise InputError(f"the label is not a readable volume: {msg}") from None
        can = lab.canonical()
        data = np.asarray(can.data)
        if tuple(data.shape) != tuple(job.shape):
            raise InputError(f"the label has shape {list(lab.shape)} but image {image_id!r} "
                             f"has {job.source_shape}: save it on the image's grid")
        _check_grid(svc, job, image_id, np.asarray(can.affine))
        return data
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _check_grid(svc: Services, job: JobRecord, image_id: str, affine: np.ndarray[Any, Any]
                ) -> None:
    """InputError when the label's canonical grid lies elsewhere than the image's: any
    corner more than a tenth of a voxel away."""
    import nibabel as nib

    img: Any = nib.load(files.canonical_path(svc.store.job_dir(job.job_id)))
    ref = np.asarray(img.affine)
    ext = np.asarray(job.shape, float) - 1
    corners = np.array([[i, j, k, 1.0] for i in (0, ext[0]) for j in (0, ext[1])
                        for k in (0, ext[2])])
    gap = float(np.abs(corners @ affine.T - corners @ ref.T)[:, :3].max())
    if gap > _GRID_TOLERANCE * min(float(s) for s in job.spacing):
        raise InputError(f"the label's grid lies up to {gap:.3g} mm away from image "
                         f"{image_id!r}'s (another origin, spacing or direction): save it "
                         "with the image's geometry")


def _check_values(svc: Services, who: Principal, job: JobRecord, image_id: str,
                  data: np.ndarray[Any, Any], label_info: Any) -> None:
    """Whole numbers 0..255, each an object of the image or named in ``label_info``."""
    if data.size == 0:
        return
    if np.issubdtype(data.dtype, np.floating) and not np.array_equal(data, np.round(data)):
        raise InputError("label values must be whole numbers (got fractions): save the "
                         "label map as integers, one value per object")
    lo, hi = float(data.min()), float(data.max())
    if lo < 0 or hi > 255:
        raise InputError(f"label values must be integers 0..255 (got {lo:g}..{hi:g})")
    values = {int(v) for v in np.unique(data)} - {0}
    known = {o.label_value for o in svc.store.list_objects(job.job_id, who)}
    if isinstance(label_info, list):
        for item in label_info:
            idx = item.get("idx", item.get("id")) if isinstance(item, dict) else None
            if isinstance(idx, int):
                known.add(idx)
    extra = sorted(values - known)
    if extra:
        objs = ", ".join(str(v) for v in sorted(known)) or "none"
        raise InputError(f"label value {extra[0]} is not an object of image {image_id!r} "
                         f"(its label values: {objs}); name each new value in label_info "
                         f"([{{\"name\": ..., \"idx\": {extra[0]}}}])")
