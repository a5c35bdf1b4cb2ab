"""The on-disk datastore of reviewed cases: its layout, and adding a case atomically.

Layout (``<SEGLOOP_HOME>/datastore``, see docs/service.md)::

    manifest.csv                      one row per reviewed object, the ``segloop eval`` manifest
                                      format plus job_id, version, reviewed_by (MANIFEST_COLUMNS)
    cases/<job_id>_v<n>/image.nii.gz  the job's canonical volume
    cases/<job_id>_v<n>/label.nii.gz  the reviewed label map (uint8, same grid)
    cases/<job_id>_v<n>/meta.json     who reviewed what: job, version, author, engine, objects
    .lock                             the writers' lock (segloop.datastore.lock)
    .tmp/                             case folders being built (a crash's leftovers are swept)

A case is built in ``.tmp`` without the lock (the slow part: copying and compressing volumes),
then, under the lock, renamed into ``cases/`` and its rows written to ``manifest.csv`` through a
temporary file and a rename. So the manifest is always whole, every case folder it names is
complete, and concurrent writers (threads, the API and Celery workers) each add their rows.
Adding a case that is already there writes only the rows the manifest lacks (a crash between
the rename and the manifest write is repaired by reviewing again).

Imports numpy, nibabel and segloop.io; must not import jobs, api, train or eval.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from segloop.datastore.lock import exclusive
from segloop.errors import InputError
from segloop.fsio import replace_dir
from segloop.io.writers import atomic_path

__all__ = ["MANIFEST_COLUMNS", "MANIFEST_NAME", "PICTURE_NAME", "STALE_BUILD_SECONDS", "AddedCase",
           "Datastore", "ManifestRow", "ReviewedCase", "ReviewedObject", "case_picture"]

MANIFEST_NAME = "manifest.csv"
#: a 2D case's picture, beside its image.nii.gz (see :class:`ReviewedCase`)
PICTURE_NAME = "picture.png"
#: a case folder in ``.tmp`` untouched this long was left by a crash (builds take seconds)
STALE_BUILD_SECONDS = 3600.0
MANIFEST_COLUMNS: tuple[str, ...] = (
    "case_id", "image", "label", "label_value", "structure", "modality", "patient_id", "job_id",
    "version", "reviewed_by")


def case_picture(image: Path) -> Path | None:
    """The picture of the 2D case whose manifest image is ``image``; None for a volume case."""
    p = image.parent / PICTURE_NAME
    return p if image.name == "image.nii.gz" and p.is_file() else None


@dataclass(frozen=True)
class ReviewedObject:
    """One object of a reviewed mask: its id in the job, label value and name."""

    object_id: int
    label_value: int
    name: str


@dataclass(frozen=True)
class ReviewedCase:
    """A reviewed mask version to add.

    image: the canonical volume file (NIfTI) to copy; labels: the label map ``(X, Y, Z)`` uint8
    on that file's grid (saved with its affine); meta: extra provenance for meta.json.
    picture: a 2D job's picture as its engines see it (8-bit grey or RGB PNG, upright), copied
    as ``picture.png`` (:data:`PICTURE_NAME`); the case's image.nii.gz is then its one-slice
    grey stand-in with ``x`` = column, ``y`` = row, and meta.json says ``"image2d": true``.
    """

    job_id: str
    version: int
    reviewed_by: str
    modality: str | None
    image: Path
    labels: npt.NDArray[np.uint8]
    objects: tuple[ReviewedObject, ...]
    meta: dict[str, Any] = field(default_factory=dict)
    picture: Path | None = None

    @property
    def case_name(self) -> str:
        """``<job_id>_v<nnnn>``: the case folder's name."""
        return f"{self.job_id}_v{self.version:04d}"


@dataclass(frozen=True)
class ManifestRow:
    """One row of ``manifest.csv`` (one object of one reviewed case)."""

    case_id: str
    image: str
    label: str
    label_value: int
    structure: str
    modality: str
    patient_id: str
    job_id: str
    version: int
    reviewed_by: str

    def as_csv(self) -> dict[str, str]:
        """The row as MANIFEST_COLUMNS -> text."""
        return {k: str(getattr(self, k)) for k in MANIFEST_COLUMNS}


@dataclass(frozen=True)
class AddedCase:
    """What :meth:`Datastore.add` did: the case folder (relative to the datastore), the rows
    it wrote now and whether the folder was already there."""

    case_dir: str
    rows_added: int
    existed: bool


class Datastore:
    """The reviewed cases under ``root`` (``<SEGLOOP_HOME>/datastore``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def manifest_path(self) -> Path:
        """``<root>/manifest.csv``."""
        return self.root / MANIFEST_NAME

    @property
    def _lock(self) -> Path:
        return self.root / ".lock"

    def require_manifest(self) -> Path:
        """The manifest path; InputError naming how to get one when no case was reviewed yet."""
        if not self.manifest_path.is_file():
            raise InputError(
                f"no reviewed masks in {self.root} (no {MANIFEST_NAME}): review a mask in the "
                "server first (POST /api/v1/jobs/ID/review), or point --from-datastore at its "
                "datastore")
        return self.manifest_path

    def rows(self) -> list[dict[str, str]]:
        """The manifest's rows as read (empty when there is no manifest yet)."""
        if not self.manifest_path.is_file():
            return []
        with self.manifest_path.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    def add(self, case: ReviewedCase) -> AddedCase:
        """Add a reviewed case: its folder and one manifest row per object present in the mask.

        Safe to call from any number of threads and processes at once; idempotent per case.
        """
        import nibabel as nib

        self.sweep()
        name = case.case_name
        dest = self.root / "cases" / name
        build = self.root / ".tmp" / f"{name}-{uuid.uuid4().hex[:8]}"
        build.mkdir(parents=True)
        try:
            if not dest.exists():  # (checked again under the lock)
                if case.image.name.endswith(".gz"):
                    shutil.copyfile(case.image, build / "image.nii.gz")
                else:  # a job's canonical volume is kept uncompressed (fast to ingest)
                    import gzip

                    with open(case.image, "rb") as src, \
                            gzip.open(build / "image.nii.gz", "wb", compresslevel=1) as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                if case.picture is not None:
                    shutil.copyfile(case.picture, build / PICTURE_NAME)
                affine = np.asarray(nib.load(str(case.image)).affine, np.float64)  # type: ignore[attr-defined]
                nib.save(nib.Nifti1Image(np.asarray(case.labels, np.uint8), affine),
                         str(build / "label.nii.gz"))
                meta = {"job_id": case.job_id, "version": case.version,
                        "reviewed_by": case.reviewed_by, "modality": case.modality,
                        "objects": [o.__dict__ for o in case.objects], **case.meta,
                        **({"image2d": True} if case.picture is not None else {})}
                (build / "meta.json").write_text(json.dumps(meta, indent=1))
            rows = self._rows_of(case)
            with exclusive(self._lock):
                existed = dest.exists()
                if not existed:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    replace_dir(build, dest)  # files and folders flushed: a crash keeps a whole case
                added = self._append(rows)
        finally:
            shutil.rmtree(build, ignore_errors=True)
        return AddedCase(case_dir=f"cases/{name}", rows_added=added, existed=existed)

    def sweep(self, older_than: float = STALE_BUILD_SECONDS) -> int:
        """Remove case folders a crash left half-built in ``.tmp`` (those untouched for
        ``older_than`` seconds: a build in flight elsewhere is younger); returns how many.
        Every :meth:`add` calls it first."""
        tmp = self.root / ".tmp"
        if not tmp.is_dir():
            return 0
        cutoff = time.time() - older_than
        n = 0
        for p in tmp.iterdir():
            try:
                if p.stat().st_mtime < cutoff:
                    shutil.rmtree(p, ignore_errors=True)
                    n += 1
            except FileNotFoundError:  # removed by another writer meanwhile
                continue
        return n

    @staticmethod
    def _rows_of(case: ReviewedCase) -> list[ManifestRow]:
        present = set(np.unique(case.labels).tolist())
        name = case.case_name
        return [ManifestRow(case_id=f"{name}_o{o.object_id}", image=f"cases/{name}/image.nii.gz",
                            label=f"cases/{name}/label.nii.gz", label_value=o.label_value,
                            structure=o.name, modality=case.modality or "",
                            patient_id=case.job_id, job_id=case.job_id, version=case.version,
                            reviewed_by=case.reviewed_by)
                for o in case.objects if o.label_value in present]

    def _append(self, rows: list[ManifestRow]) -> int:
        """Under the lock: rewrite the manifest with the rows it lacks appended; returns how
        many were new."""
        old = self.manifest_path.read_text(encoding="utf-8") if self.manifest_path.is_file() \
            else ""
        have = {r["case_id"] for r in csv.DictReader(io.StringIO(old))} if old else set()
        new = [r for r in rows if r.case_id not in have]
        if not new:
            return 0
        out = io.StringIO()
        w = csv.DictWriter(out, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
        if not old:
            w.writeheader()
        elif not old.endswith("\n"):
            out.write("\n")
        for r in new:
            w.writerow(r.as_csv())
        with atomic_path(self.manifest_path) as tmp:
            tmp.write_text(old + out.getvalue(), encoding="utf-8")
        return len(new)
