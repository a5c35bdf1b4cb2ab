"""The records the job store hands out and the caller it acts for: the caller (Principal),
the typed public views of job, task, version, object, review, cleanup, audit and user rows
(pydantic models the API also uses as its response models, so ``/docs`` shows them), and a
worker's Claim.

Pure data helpers over segloop.jobs.db rows; must not import the store modules, FastAPI,
Celery or torch.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from segloop.jobs.db import JobRow, MaskVersionRow, ObjectRow, TaskRow
from segloop.jobs.errors import ForbiddenError, NotFoundError
from segloop.jobs.image2d_job import is_2d_format
from segloop.jobs.states import TERMINAL, TaskKind, TaskState
from segloop.types import Plane

__all__ = ["LOCAL_ADMIN", "PALETTE", "ROLES", "TASK_KINDS", "TERMINAL", "ActiveTaskRecord",
           "AuditRecord", "Claim", "ClaimOutcome", "CleanupReport", "JobRecord", "JobStatus",
           "ObjectRecord", "Principal", "Record", "ReviewRecord", "TaskRecord", "UserRecord",
           "VersionRecord", "check_uuid", "hash_key", "require_reviewer", "task_dict"]


ROLES = ("annotator", "reviewer", "admin")
TASK_KINDS = tuple(TaskKind)
PALETTE = ("#ff4040", "#40c040", "#4080ff", "#ffc000", "#c040ff", "#00c0c0", "#ff8000",
           "#ff40a0")

@dataclass(frozen=True)
class Principal:
    """The caller: a user name and a role from ROLES."""

    name: str
    role: str

    @property
    def is_reviewer(self) -> bool:
        """Reviewer or admin."""
        return self.role in ("reviewer", "admin")


#: the caller when API keys are not required (loopback): full rights
LOCAL_ADMIN = Principal("local", "admin")


def hash_key(key: str) -> str:
    """SHA-256 hex of an API key (keys are 256-bit random, so a fast hash is enough)."""
    return hashlib.sha256(key.encode()).hexdigest()


def _iso(t: dt.datetime) -> str:
    """A naive UTC time as ISO 8601 ending in ``Z``."""
    return t.isoformat() + "Z"


class Record(BaseModel):
    """A record the job store hands out: frozen, typed, and the API's response model as it
    is (``/docs`` shows its fields). Times are ISO 8601 UTC strings ending in ``Z``."""

    model_config = ConfigDict(frozen=True)

    def as_dict(self) -> dict[str, Any]:
        """The JSON-able dict (field order; what events and protocol adapters carry)."""
        return self.model_dump(mode="json")


class JobRecord(Record):
    """A job: its upload, grids and current mask version."""

    job_id: str
    owner: str
    filename: str
    created: str
    updated: str
    source_format: str
    modality: str | None
    shape: list[int] = Field(description="canonical (RAS) grid, voxels")
    source_shape: list[int] = Field(description="the uploaded grid, voxels")
    spacing: list[float]
    orientation: str
    image2d: bool = Field(False, description="a 2D image job (PNG, JPEG, TIFF, BMP, one DICOM "
                          "frame): shape is (width, height, 1), x = column, y = row from the "
                          "top-left; source_shape is (rows, columns)")
    engine: str | None
    current_version: int
    last_task: str | None

    @classmethod
    def from_row(cls, job: JobRow) -> JobRecord:
        """The public view of a job row."""
        return cls(
            job_id=job.id, owner=job.owner, filename=job.filename, created=_iso(job.created),
            updated=_iso(job.updated), source_format=job.source_format,
            modality=job.modality, shape=job.shape, source_shape=job.source_shape,
            spacing=job.spacing, orientation=job.orientation,
            image2d=is_2d_format(job.source_format), engine=job.engine,
            current_version=job.current_version, last_task=job.last_task)


class TaskRecord(Record):
    """A task's state and progress (status endpoint, events, protocol adapters)."""

    task_id: str
    job_id: str
    kind: TaskKind
    state: TaskState
    stage: str
    progress: float
    slices_done: int
    slices_total: int
    eta_seconds: float | None
    error: str | None
    attempts: int
    version: int | None = Field(description="the mask version it produced")
    params: dict[str, Any]
    created: str
    finished: str | None

    @classmethod
    def from_row(cls, t: Any) -> TaskRecord:
        """From a TaskRow or a Core row with the same columns."""
        return cls(
            task_id=t.id, job_id=t.job_id, kind=t.kind, state=t.state, stage=t.stage,
            progress=round(t.progress, 4), slices_done=t.slices_done,
            slices_total=t.slices_total, eta_seconds=t.eta_seconds, error=t.error,
            attempts=t.attempts, version=t.version, params=t.params, created=_iso(t.created),
            finished=_iso(t.finished) if t.finished else None)


class ActiveTaskRecord(TaskRecord):
    """A queued or running task, with its owner and worker."""

    worker: str | None
    owner: str

    @classmethod
    def from_task_row(cls, t: TaskRow) -> ActiveTaskRecord:
        """From a TaskRow."""
        return cls(**dict(TaskRecord.from_row(t)), worker=t.worker, owner=t.owner)


def task_dict(t: Any) -> dict[str, Any]:
    """The public view of a task as a dict (see :class:`TaskRecord`): ``t`` is a TaskRow or a
    Core row with the same columns."""
    return TaskRecord.from_row(t).as_dict()


class JobStatus(Record):
    """A job's state: its latest task's state/stage/progress/ETA/error and mask version
    (``ready``/``uploaded`` before its first task)."""

    job_id: str
    current_version: int
    active_tasks: int
    state: str
    stage: str
    progress: float
    slices_done: int
    slices_total: int
    eta_seconds: float | None
    error: str | None
    task: TaskRecord | None


class VersionRecord(Record):
    """One mask version of a job."""

    version: int
    created: str
    author: str
    source: str
    engine: str | None
    task_id: str | None
    parent: int
    reviewed: bool
    reviewed_by: str | None
    current: bool

    @classmethod
    def from_row(cls, v: MaskVersionRow, current: int) -> VersionRecord:
        """The public view of a version (``current``: the job's current version number)."""
        return cls(version=v.number, created=_iso(v.created), author=v.author, source=v.source,
                   engine=v.engine, task_id=v.task_id, parent=v.parent, reviewed=v.reviewed,
                   reviewed_by=v.reviewed_by, current=v.number == current)


class ObjectRecord(Record):
    """An object (label) of a job."""

    object_id: int
    name: str
    colour: str
    label_value: int
    anchor_slice: int | None
    #: the plane whose slice ``anchor_slice`` is (where the object's prompt was drawn)
    anchor_axis: Plane = Plane.AXIAL

    @classmethod
    def from_row(cls, o: ObjectRow, anchor_axis: Plane = Plane.AXIAL) -> ObjectRecord:
        """The public view of an object row."""
        return cls(object_id=o.object_id, name=o.name, colour=o.colour,
                   label_value=o.label_value, anchor_slice=o.anchor_slice,
                   anchor_axis=anchor_axis)


class ReviewRecord(Record):
    """A version marked final and where the datastore keeps its copy."""

    job_id: str
    version: int
    reviewed: bool
    datastore_case: str


class CleanupReport(Record):
    """What a retention run deleted and kept."""

    deleted: list[str]
    kept_reviewed: list[str]
    older_than_days: int
    leftovers_removed: list[str]
    audit_entries_pruned: int
    vacuumed: bool


class AuditRecord(Record):
    """One audited action."""

    ts: str
    user: str
    action: str
    job_id: str | None
    detail: dict[str, Any]


class UserRecord(Record):
    """A user and their role (never their key)."""

    name: str
    role: str
    created: str


class ClaimOutcome(StrEnum):
    """What :meth:`~segloop.jobs.store.JobStore.claim` found."""

    CLAIMED = "claimed"  # taken: the Claim carries what the run needs
    SKIPPED = "skipped"  # finished, gone or held by a live worker
    BLOCKED = "blocked"  # earlier tasks of its job are unfinished


@dataclass
class Claim:
    """A task taken by a worker, with everything its run needs (read in the claiming
    transaction): the task row, the job's shape/modality, its current version (number,
    recorded steps) or None, the version this task already wrote (an earlier attempt) or None,
    the model generation and the object label values."""

    task: Any
    job_id: str
    shape: tuple[int, ...]
    modality: str | None
    version: Any
    done_version: int | None
    generation: str
    labels_of: dict[int, int] = field(default_factory=dict)


def check_uuid(job_id: str) -> None:
    """NotFoundError unless ``job_id`` is a UUID."""
    try:
        uuid.UUID(job_id)
    except ValueError:
        raise NotFoundError(f"no job {job_id!r}: job ids are UUIDs") from None


def require_reviewer(who: Principal, what: str) -> None:
    """ForbiddenError unless ``who`` is reviewer/admin."""
    if not who.is_reviewer:
        raise ForbiddenError(f"{what} needs the reviewer or admin role")

