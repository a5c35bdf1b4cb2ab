"""The records the job store hands out and the caller it acts for: the caller (Principal),
the public dict views of job, task, version and object rows, and a worker's Claim.

Pure data helpers over segloop.jobs.db rows; must not import the store modules, FastAPI,
Celery or torch.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from segloop.jobs.db import JobRow, MaskVersionRow, ObjectRow
from segloop.jobs.errors import ForbiddenError, NotFoundError
from segloop.jobs.image2d_job import is_2d_format
from segloop.jobs.states import TERMINAL, TaskKind

__all__ = ["LOCAL_ADMIN", "PALETTE", "ROLES", "TASK_KINDS", "TERMINAL", "Claim", "ClaimOutcome",
           "Principal", "TaskRecord", "check_uuid", "hash_key", "job_dict", "object_dict",
           "require_reviewer", "task_dict", "version_dict"]


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


def job_dict(job: JobRow) -> dict[str, Any]:
    """The public view of a job."""
    return {
        "job_id": job.id, "owner": job.owner, "filename": job.filename,
        "created": job.created.isoformat() + "Z", "updated": job.updated.isoformat() + "Z",
        "source_format": job.source_format, "modality": job.modality,
        "shape": job.shape, "source_shape": job.source_shape, "spacing": job.spacing,
        "orientation": job.orientation, "image2d": is_2d_format(job.source_format),
        "engine": job.engine,
        "current_version": job.current_version, "last_task": job.last_task,
    }


@dataclass(frozen=True)
class TaskRecord:
    """The public view of a task (status endpoint, events, protocol adapters); times are ISO
    8601 UTC strings ending in ``Z``."""

    task_id: str
    job_id: str
    kind: str
    state: str
    stage: str
    progress: float
    slices_done: int
    slices_total: int
    eta_seconds: float | None
    error: str | None
    attempts: int
    version: int | None
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
            attempts=t.attempts, version=t.version, params=t.params,
            created=t.created.isoformat() + "Z",
            finished=t.finished.isoformat() + "Z" if t.finished else None)

    def as_dict(self) -> dict[str, Any]:
        """The JSON-able dict (field order; ``params`` is not copied)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def task_dict(t: Any) -> dict[str, Any]:
    """The public view of a task as a dict (see :class:`TaskRecord`): ``t`` is a TaskRow or a
    Core row with the same columns."""
    return TaskRecord.from_row(t).as_dict()


def version_dict(v: MaskVersionRow, current: int) -> dict[str, Any]:
    """The public view of a version (``current``: the job's current version number)."""
    return {
        "version": v.number, "created": v.created.isoformat() + "Z", "author": v.author,
        "source": v.source, "engine": v.engine, "task_id": v.task_id, "parent": v.parent,
        "reviewed": v.reviewed, "reviewed_by": v.reviewed_by, "current": v.number == current,
    }



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


def object_dict(o: ObjectRow) -> dict[str, Any]:
    """The public view of an object."""
    return {"object_id": o.object_id, "name": o.name, "colour": o.colour,
            "label_value": o.label_value, "anchor_slice": o.anchor_slice}


def require_reviewer(who: Principal, what: str) -> None:
    """ForbiddenError unless ``who`` is reviewer/admin."""
    if not who.is_reviewer:
        raise ForbiddenError(f"{what} needs the reviewer or admin role")

