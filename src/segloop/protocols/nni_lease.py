"""nnInteractive leases over segloop jobs: the image, the propagation axis, the mask diff.

A lease (``POST /claim``) is a ref of kind ``nni-lease`` keyed by the SHA-256 of its token, so
it lives in the job store's database and survives a server restart; it ends when released,
after ``protocol_idle_seconds`` without an interaction, or ``protocol_liveness_seconds``
without a heartbeat (then every call answers 410 and the client raises SessionExpiredError).

``set_image`` sends a ``(C, A0, A1, A2)`` array and its spacing in array order, without an
affine. segloop propagates along its canonical z, so the job is created at the first
interaction: its volume is channel 0 transposed so that the *propagation axis* (the 2D box's
size-1 axis; for a first click, the axis with the largest spacing) becomes z. The lease keeps
that permutation to map coordinates in and masks out. The job is created at ``set_image``
already, with the guessed axis, so the first box does not wait for the ingest; a first box
flat along another axis re-creates it (nothing was drawn yet). ``reset_interactions`` starts a fresh
job at the next interaction (a new axis may then be chosen). The target buffer holds object
1 of the job as 0/1; every prediction answers with the bounding box of the voxels that changed
and their new values. Imports jobs, io and numpy; never engines or torch.
Must not import segloop.cli (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import gzip
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from segloop.api.app import Services
from segloop.errors import InputError
from segloop.jobs import files
from segloop.jobs.errors import ConflictError
from segloop.jobs.store import Principal, hash_key

from .refs import Ref, RefStore

__all__ = ["Diff", "Lease", "lease_key"]


def lease_key(token: str) -> str:
    """The ref key of a lease token (its hash: tokens are never stored)."""
    return hash_key(token)


@dataclass(frozen=True)
class Diff:
    """What changed in the target buffer: ``bbox`` ``[[lo, hi), ...]`` in buffer axes (None:
    nothing) and the new values inside it; ``mask`` is the whole new buffer, at job version
    ``version``."""

    bbox: list[list[int]] | None
    values: npt.NDArray[np.uint8] | None
    mask: npt.NDArray[np.uint8] | None = None
    version: int = 0


class Lease:
    """One lease's state (``ref.data``) and the operations on its job."""

    def __init__(self, svc: Services, refs: RefStore, ref: Ref, who: Principal) -> None:
        self.svc, self.refs, self.ref, self.who = svc, refs, ref, who

    @property
    def folder(self) -> Path:
        """Where the lease's image is kept between set_image and the job's creation."""
        return self.svc.settings.home / "protocols" / "nninteractive" / str(self.ref.data["dir"])

    @property
    def job_id(self) -> str | None:
        """The current job, if an interaction created one."""
        return self.ref.job_id

    @property
    def perm(self) -> list[int]:
        """Canonical axis c <- image axis perm[c]."""
        return list(self.ref.data.get("perm") or [0, 1, 2])

    def save(self, touch: bool = True) -> None:
        """Store the lease's state (and count this as activity)."""
        self.refs.update(self.ref, touch=touch)

    # ------------------------------------------------------------------ image
    def set_image(self, image: npt.NDArray[Any], spacing: Any) -> list[int]:
        """Keep channel 0 of a ``(C, A0, A1, A2)`` image; returns its full shape."""
        if image.ndim != 4 or image.shape[0] < 1 or min(image.shape[1:]) < 1:
            raise InputError(f"set_image needs a (C, X, Y, Z) array, got shape {image.shape}")
        vol = np.asarray(image[0])
        if vol.dtype == np.bool_:
            vol = vol.astype(np.uint8)
        if vol.dtype == np.float64 or vol.dtype == np.float16:
            vol = vol.astype(np.float32)
        sp = [1.0, 1.0, 1.0]
        if spacing is not None:
            try:
                sp = [float(v) for v in list(spacing)[-3:]]
            except (TypeError, ValueError):
                raise InputError(f"spacing must be three numbers, got {spacing!r}") from None
            if len(sp) != 3 or not all(v > 0 for v in sp):
                raise InputError(f"spacing must be three positive numbers, got {spacing!r}")
        self.folder.mkdir(parents=True, exist_ok=True)
        np.save(self.folder / "image.npy", vol)
        self.ref.job_id = None
        self.ref.data.update(spacing=sp, shape=list(vol.shape), perm=None, pending=[])
        self.save()
        return list(image.shape)

    def shape(self) -> tuple[int, int, int]:
        """The image's spatial shape (ConflictError before set_image)."""
        s = self.ref.data.get("shape")
        if not s:
            raise ConflictError("no image yet: call set_image first")
        return int(s[0]), int(s[1]), int(s[2])

    def ensure_job(self, axis: int | None) -> str:
        """The job, created with ``axis`` (None: largest spacing) as its propagation axis;
        ConflictError when the job exists with another axis."""
        shape = self.shape()
        job_id = self.ref.job_id
        if job_id is not None and (axis is None or self.perm[2] == axis):
            return job_id
        if job_id is not None:
            if self.ref.data.get("started"):
                raise ConflictError(
                    f"this lease propagates along image axis {self.perm[2]}; a 2D box must be "
                    f"flat along that axis (or call reset_interactions to switch to axis {axis})")
            self.ref.job_id = None  # the guess at set_image was wrong; nothing was drawn yet
            self.svc.store.delete_job(job_id, self.who)
        sp = list(self.ref.data["spacing"])
        if axis is None:
            axis = int(np.argmax(sp)) if len(set(sp)) > 1 else 2
        perm = [a for a in range(3) if a != axis] + [axis]
        vol = np.load(self.folder / "image.npy")
        if tuple(vol.shape) != shape:  # pragma: no cover - written by set_image
            raise ConflictError("the lease's image is missing: call set_image again")
        data = np.ascontiguousarray(vol.transpose(perm))
        affine = np.diag([sp[perm[0]], sp[perm[1]], sp[perm[2]], 1.0])
        img = nib.Nifti1Image(data, affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        self.svc.settings.tmp_dir.mkdir(parents=True, exist_ok=True)
        path = self.svc.settings.tmp_dir / f"nni-{uuid.uuid4()}"
        path.write_bytes(gzip.compress(img.to_bytes(), compresslevel=1))
        job = self.svc.store.create_job(path, "nninteractive.nii.gz", self.who)
        self.ref.job_id = job.job_id
        self.ref.data["perm"] = perm
        self.save()
        return self.ref.job_id

    # ------------------------------------------------------------------ coordinates
    def to_canonical(self, idx: Any) -> tuple[int, int, int]:
        """Canonical (x, y, z) of a voxel index in image axes."""
        shape = self.shape()
        try:
            q = [round(float(v)) for v in idx]
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"coordinates must be three numbers, got {idx!r}") from None
        if len(q) != 3 or not all(0 <= v < n for v, n in zip(q, shape, strict=True)):
            raise InputError(f"point {idx!r} lies outside the image (shape {list(shape)})")
        p = self.perm
        return q[p[0]], q[p[1]], q[p[2]]

    def buffer_mask(self, version: int | None = None) -> npt.NDArray[np.uint8]:
        """Object 1 of the job (a version, default current) as 0/1 in image axes."""
        if self.ref.job_id is None or version == 0:
            return np.zeros(self.shape(), np.uint8)
        store = self.svc.store
        row = None if version is None else store.version_row(self.ref.job_id, version)
        if row is not None:  # a version just made for this lease: no access check to repeat
            labels = files.load_labels(store.job_dir(self.ref.job_id) / row.path)
        else:
            labels, _ = store.labels(self.ref.job_id, self.who, version)
        return self.object_mask(labels)

    def object_mask(self, labels: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """Object 1 of a canonical label map of the job as 0/1 in image axes."""
        assert self.ref.job_id is not None
        value = self.svc.store.object_labels(self.ref.job_id).get(1, 1)
        inv = list(np.argsort(self.perm))
        return np.ascontiguousarray((labels == value).transpose(inv)).astype(np.uint8)

    def current_version(self) -> int:
        """The job's current version (0 without a job or mask)."""
        if self.ref.job_id is None:
            return 0
        return self.svc.store.get_job(self.ref.job_id, self.who).current_version

    def has_mask(self) -> bool:
        """Whether object 1 has any voxel."""
        return bool(self.current_version()) and bool(self.buffer_mask().any())

    def set_mask(self, seg: npt.NDArray[Any]) -> int:
        """Replace object 1 with ``seg`` (image axes, non-zero = inside); returns the version."""
        if tuple(seg.shape) != self.shape():
            raise InputError(f"the segmentation has shape {list(seg.shape)}, the image "
                             f"{list(self.shape())}")
        job_id = self.ensure_job(None)
        self.ref.data["started"] = bool(np.asarray(seg).any())
        labels, _ = self.svc.store.labels(job_id, self.who)
        value = self.svc.store.object_labels(job_id).get(1, 1)
        labels[labels == value] = 0
        labels[np.asarray(seg).transpose(self.perm) != 0] = value
        return self.svc.store.edit_mask(job_id, self.who, labels)

    def diff(self, before: npt.NDArray[np.uint8], version: int | None = None) -> Diff:
        """The change from ``before`` (image axes) to the mask of ``version`` (default:
        current)."""
        if version is None:
            version = self.current_version()
        return self.diff_to(before, self.buffer_mask(version), version)

    def diff_to(self, before: npt.NDArray[np.uint8], after: npt.NDArray[np.uint8],
                version: int) -> Diff:
        """The change from ``before`` to ``after`` (both image axes), at job ``version``."""
        changed = before != after
        if not changed.any():
            return Diff(None, None, after, version)
        box = []
        for ax in range(3):
            other = tuple(a for a in range(3) if a != ax)
            hit = np.flatnonzero(changed.any(axis=other))
            box.append([int(hit[0]), int(hit[-1]) + 1])
        sl = tuple(slice(a, b) for a, b in box)
        return Diff(box, np.ascontiguousarray(after[sl]), after, version)
