"""Job-store operations behind every API route and worker task: users, jobs, objects, tasks, versions.

The API routes call these methods and nothing else that touches state; the task runner
(segloop.jobs.runner) uses the task and version methods. Access rules live here, so both the
API and the CLI enforce the same ones: annotators see only their own jobs; reviewers and
admins see all; review, cleanup, model reload and deleting others' work need reviewer or
admin. Imports SQLAlchemy, numpy and segloop.io; never torch, FastAPI or Celery.

Performance: the per-task hot path (create a task, read it for the event stream, claim it
with everything the run needs, store its version and finish it) uses SQLAlchemy Core
statements, one short transaction each, instead of ORM sessions: every task costs a handful
of small statements and no object bookkeeping.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import re
import secrets
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from sqlalchemy import (
    DateTime,
    Integer,
    String,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection

from segloop.config import Settings
from segloop.datastore.local import Datastore, ReviewedCase, ReviewedObject
from segloop.errors import InputError, PromptError, SegloopError
from segloop.fsio import replace_dir
from segloop.jobs import files, housekeeping
from segloop.jobs.db import (
    AuditEntry,
    JobRow,
    KeyValue,
    MaskVersionRow,
    ObjectRow,
    TaskRow,
    UserRow,
    make_engine,
    make_sessionmaker,
    utcnow,
)
from segloop.jobs.errors import ConflictError, ForbiddenError, NotFoundError
from segloop.jobs.ingest import IngestResult
from segloop.jobs.ingest import ingest as ingest_here
from segloop.jobs.states import ACTIVE, TERMINAL, TaskKind, TaskState
from segloop.types import Prompts, validate_prompts, validate_slice

__all__ = [
    "LOCAL_ADMIN",
    "PALETTE",
    "ROLES",
    "TASK_KINDS",
    "TERMINAL",
    "Claim",
    "JobStore",
    "Principal",
    "hash_key",
    "require_reviewer",
    "task_dict",
]

log = logging.getLogger(__name__)

_J: Table = JobRow.__table__  # type: ignore[assignment]
_T: Table = TaskRow.__table__  # type: ignore[assignment]
_V: Table = MaskVersionRow.__table__  # type: ignore[assignment]
_O: Table = ObjectRow.__table__  # type: ignore[assignment]
_A: Table = AuditEntry.__table__  # type: ignore[assignment]
_KV: Table = KeyValue.__table__  # type: ignore[assignment]

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


def _job_dict(job: JobRow) -> dict[str, Any]:
    return {
        "job_id": job.id, "owner": job.owner, "filename": job.filename,
        "created": job.created.isoformat() + "Z", "updated": job.updated.isoformat() + "Z",
        "source_format": job.source_format, "modality": job.modality,
        "shape": job.shape, "source_shape": job.source_shape, "spacing": job.spacing,
        "orientation": job.orientation, "engine": job.engine,
        "current_version": job.current_version, "last_task": job.last_task,
    }


def task_dict(t: Any) -> dict[str, Any]:
    """The public view of a task (status endpoint, events): ``t`` is a TaskRow or a Core row
    with the same columns."""
    return {
        "task_id": t.id, "job_id": t.job_id, "kind": t.kind, "state": t.state,
        "stage": t.stage, "progress": round(t.progress, 4), "slices_done": t.slices_done,
        "slices_total": t.slices_total, "eta_seconds": t.eta_seconds, "error": t.error,
        "attempts": t.attempts, "version": t.version, "params": t.params,
        "created": t.created.isoformat() + "Z",
        "finished": t.finished.isoformat() + "Z" if t.finished else None,
    }


def _version_dict(v: MaskVersionRow, current: int) -> dict[str, Any]:
    return {
        "version": v.number, "created": v.created.isoformat() + "Z", "author": v.author,
        "source": v.source, "engine": v.engine, "task_id": v.task_id, "parent": v.parent,
        "reviewed": v.reviewed, "reviewed_by": v.reviewed_by, "current": v.number == current,
    }


@functools.cache
def _hot() -> SimpleNamespace:
    """The per-task statements, built once with bound parameters (SQLAlchemy then reuses their
    compiled form: no statement construction or cache-key work per task)."""
    b = bindparam
    e = _T.alias("earlier")
    earlier = select(func.count()).select_from(e).where(
        e.c.job_id == _T.c.job_id, e.c.seq < _T.c.seq,
        e.c.state.in_(ACTIVE)).scalar_subquery()
    generation = select(_KV.c.value).where(_KV.c.key == "model_generation").scalar_subquery()
    obj = select(_O.c.id).where(_O.c.job_id == _J.c.id, _O.c.object_id == b("oid"))
    anchor = select(_O.c.anchor_slice).where(_O.c.job_id == _J.c.id,
                                             _O.c.object_id == b("oid"))
    return SimpleNamespace(
        # create_task: lock the job row first, then read everything under the lock
        lock_task=update(_J).where(_J.c.id == b("jid")).values(
            last_task=b("p_tid", type_=String()), updated=b("p_now", type_=DateTime())),
        read_for_task=select(
            _J.c.owner, _J.c.shape, obj.scalar_subquery().label("obj_pk"),
            anchor.scalar_subquery().label("anchor"),
            select(func.max(_T.c.seq)).where(_T.c.job_id == _J.c.id).scalar_subquery()
            .label("top_seq")).where(_J.c.id == b("jid")),
        set_anchor=update(_O).where(_O.c.id == b("pk")).values(
            anchor_slice=b("p_anchor", type_=Integer())),
        insert_object=insert(_O),
        insert_task=insert(_T),
        insert_audit=insert(_A),
        task_for=select(_J.c.owner.label("job_owner"), *_T.c).select_from(_J).outerjoin(
            _T, and_(_T.c.id == b("tid"), _T.c.job_id == _J.c.id)).where(_J.c.id == b("jid")),
        # claim
        claim_read=select(
            *_T.c, _J.c.shape.label("job_shape"), _J.c.modality.label("job_modality"),
            _J.c.current_version.label("job_version"), earlier.label("earlier"),
            generation.label("generation")).join(_J, _J.c.id == _T.c.job_id)
        .where(_T.c.id == b("tid")),
        claim=update(_T).where(_T.c.id == b("tid"), or_(
            _T.c.state == TaskState.QUEUED,
            and_(_T.c.state == TaskState.RUNNING, _T.c.heartbeat < b("cutoff")))).values(
            state=TaskState.RUNNING, stage="starting", worker=b("p_worker", type_=String()),
            heartbeat=b("p_hb", type_=DateTime()), started=b("p_started", type_=DateTime()),
            attempts=_T.c.attempts + 1),
        task_row=select(*_T.c).where(_T.c.id == b("tid")),
        succeed=update(_T).where(_T.c.id == b("tid"), _T.c.state != TaskState.SUCCEEDED).values(
            state=TaskState.SUCCEEDED, stage=TaskState.SUCCEEDED, error=None,
            finished=b("p_fin", type_=DateTime()), version=b("p_v", type_=Integer()),
            progress=1.0, eta_seconds=0.0,
            slices_done=func.coalesce(b("p_done", type_=Integer()), _T.c.slices_done),
            slices_total=func.coalesce(b("p_total", type_=Integer()), _T.c.slices_total)),
        versions_read=select(_V.c.number, _V.c.replay, _V.c.path, _V.c.task_id).where(
            _V.c.job_id == b("jid"), or_(_V.c.number == b("num"), _V.c.task_id == b("tid"))),
        labels_read=select(_O.c.object_id, _O.c.label_value).where(_O.c.job_id == b("jid")),
        # versions
        lock_job=update(_J).where(_J.c.id == b("jid")).values(
            updated=b("p_now", type_=DateTime())),
        job_numbers=select(_J.c.current_version, select(func.max(_V.c.number))
                           .where(_V.c.job_id == _J.c.id).scalar_subquery().label("top"))
        .where(_J.c.id == b("jid")),
        insert_version=insert(_V),
        set_current=update(_J).where(_J.c.id == b("jid")).values(
            current_version=b("p_n", type_=Integer()),
            engine=func.coalesce(b("p_engine", type_=String()), _J.c.engine)),
        get_kv=select(_KV.c.value).where(_KV.c.key == b("key")),
    )


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


def _check_uuid(job_id: str) -> None:
    try:
        uuid.UUID(job_id)
    except ValueError:
        raise NotFoundError(f"no job {job_id!r}: job ids are UUIDs") from None


def _object_dict(o: ObjectRow) -> dict[str, Any]:
    return {"object_id": o.object_id, "name": o.name, "colour": o.colour,
            "label_value": o.label_value, "anchor_slice": o.anchor_slice}


class JobStore:
    """All persistent state of the service: a database plus the job folders under ``home``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.ensure_dirs()
        self.engine = make_engine(settings.db_url)
        self.sessions = make_sessionmaker(self.engine)

    def close(self) -> None:
        """Release database connections."""
        self.engine.dispose()

    def job_dir(self, job_id: str) -> Path:
        """The folder of a job (job ids are UUIDs generated here, never client paths)."""
        return self.settings.jobs_dir / str(uuid.UUID(job_id))

    # ------------------------------------------------------------------ audit, users
    def audit(self, user: str, action: str, job_id: str | None = None, **detail: Any) -> None:
        """Record one audited action."""
        with self.sessions.begin() as s:
            s.add(AuditEntry(user=user, action=action, job_id=job_id,
                             detail=json.loads(json.dumps(detail, default=str))))

    def audit_log(self, limit: int = 200, user: str | None = None) -> list[dict[str, Any]]:
        """The newest audit entries, newest first."""
        with self.sessions() as s:
            q = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
            if user:
                q = q.where(AuditEntry.user == user)
            return [{"ts": a.ts.isoformat() + "Z", "user": a.user, "action": a.action,
                     "job_id": a.job_id, "detail": a.detail} for a in s.scalars(q)]

    def add_user(self, name: str, role: str) -> str:
        """Create a user; returns the API key (shown once, only its hash is stored)."""
        if role not in ROLES:
            raise InputError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
        if not name or len(name) > 100 or not name.replace("-", "").replace("_", "").replace(
            ".", "").isalnum():
            raise InputError("user names use letters, digits, '-', '_' and '.' (1-100 chars)")
        key = "sl_" + secrets.token_urlsafe(32)
        with self.sessions.begin() as s:
            if s.scalar(select(UserRow).where(UserRow.name == name)) is not None:
                raise ConflictError(f"user {name!r} already exists")
            s.add(UserRow(name=name, role=role, key_hash=hash_key(key)))
        self.audit(name, "user-added", role=role)
        return key

    def remove_user(self, name: str) -> None:
        """Delete a user (their jobs stay)."""
        with self.sessions.begin() as s:
            n = s.execute(delete(UserRow).where(UserRow.name == name)).rowcount
        if not n:
            raise NotFoundError(f"no user named {name!r}")
        self.audit(name, "user-removed")

    def list_users(self) -> list[dict[str, Any]]:
        """Users and roles (never keys)."""
        with self.sessions() as s:
            return [{"name": u.name, "role": u.role, "created": u.created.isoformat() + "Z"}
                    for u in s.scalars(select(UserRow).order_by(UserRow.name))]

    def count_users(self) -> int:
        """How many users exist."""
        with self.sessions() as s:
            return int(s.scalar(select(func.count()).select_from(UserRow)) or 0)

    def authenticate(self, key: str) -> Principal | None:
        """The user owning ``key``, or None."""
        with self.sessions() as s:
            u = s.scalar(select(UserRow).where(UserRow.key_hash == hash_key(key)))
            return Principal(u.name, u.role) if u else None

    # ------------------------------------------------------------------ jobs
    def create_job(self, upload: Path, filename: str, owner: Principal,
                   ingest: Callable[[Path, Path, files.UploadLimits], IngestResult] = ingest_here,
                   ) -> dict[str, Any]:
        """Ingest an uploaded file (already on disk under tmp) as a new job.

        ``ingest`` reads it (the API passes an :class:`~segloop.jobs.ingest.IngestPool`: a
        child process). Nothing is left behind on error: the job folder is built under tmp
        and renamed into place; the upload file is removed in every case.
        """
        job_id = str(uuid.uuid4())
        build = self.settings.tmp_dir / f"job-{job_id}"
        final = self.job_dir(job_id)
        try:
            info = ingest(upload, build, files.UploadLimits.from_settings(self.settings))
            replace_dir(build, final)  # flushed to disk before it becomes visible
        except SegloopError as exc:
            shutil.rmtree(build, ignore_errors=True)
            upload.unlink(missing_ok=True)
            # the message is for the client: name its file, never a server-side path
            label = Path(filename).name[:200] if filename else "the upload"
            pattern = "|".join(re.escape(str(p)) + r"[^\s:]*" for p in (build, upload))
            exc.args = tuple(re.sub(pattern, label, a) if isinstance(a, str) else a
                             for a in exc.args)
            raise
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            upload.unlink(missing_ok=True)
            raise
        safe_name = Path(filename).name[:200] if filename else ""
        row = JobRow(
            id=job_id, owner=owner.name, filename=safe_name, source_format=info.source_format,
            source_rel=info.rel, modality=info.modality, shape=info.shape,
            source_shape=info.source_shape, spacing=info.spacing,
            orientation=info.orientation,
        )
        try:
            with self.sessions.begin() as s:
                s.add(row)
                s.flush()
                s.add(ObjectRow(job_id=job_id, object_id=1, name="object 1", colour=PALETTE[0],
                                label_value=1))
        except BaseException:
            shutil.rmtree(final, ignore_errors=True)
            raise
        self.audit(owner.name, "upload", job_id, filename=safe_name, format=info.source_format,
                   shape=info.source_shape)
        return _job_dict(row)

    def _job(self, s: Any, job_id: str, who: Principal) -> JobRow:
        try:
            uuid.UUID(job_id)
        except ValueError:
            raise NotFoundError(f"no job {job_id!r}: job ids are UUIDs") from None
        job: JobRow | None = s.get(JobRow, job_id)
        if job is None or (job.owner != who.name and not who.is_reviewer):
            raise NotFoundError(f"no job {job_id} (or it belongs to another user)")
        return job

    def get_job(self, job_id: str, who: Principal) -> dict[str, Any]:
        """A job's record; NotFoundError when unknown or not visible to ``who``."""
        with self.sessions() as s:
            return _job_dict(self._job(s, job_id, who))

    def source_rel(self, job_id: str) -> str:
        """Where the upload lies inside the job folder (no access check)."""
        with self.sessions() as s:
            job = s.get(JobRow, job_id)
            if job is None:
                raise NotFoundError(f"no job {job_id}")
            return str(job.source_rel)

    def list_jobs(self, who: Principal, all_users: bool = False) -> list[dict[str, Any]]:
        """The caller's jobs (reviewers/admins: everyone's with ``all_users``), newest first."""
        with self.sessions() as s:
            q = select(JobRow).order_by(JobRow.created.desc())
            if not (all_users and who.is_reviewer):
                q = q.where(JobRow.owner == who.name)
            return [_job_dict(j) for j in s.scalars(q)]

    def delete_job(self, job_id: str, who: Principal) -> None:
        """Delete a job and its files; others' jobs need reviewer/admin. Datastore copies stay."""
        with self.sessions.begin() as s:
            job = self._job(s, job_id, who)
            if job.owner != who.name and not who.is_reviewer:
                raise ForbiddenError("deleting another user's job needs the reviewer or admin role")
            s.execute(update(TaskRow).where(TaskRow.job_id == job_id,
                                            TaskRow.state.in_(ACTIVE))
                      .values(cancel_requested=True))
            for model in (TaskRow, MaskVersionRow, ObjectRow):
                s.execute(delete(model).where(model.job_id == job_id))
            s.delete(job)
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        self.audit(who.name, "delete-job", job_id)

    def touch(self, s: Any, job_id: str) -> None:
        """Mark a job as used now (retention counts from the last use)."""
        s.execute(update(JobRow).where(JobRow.id == job_id).values(updated=utcnow()))

    # ------------------------------------------------------------------ objects
    def _ensure_object(self, s: Any, job_id: str, object_id: int) -> ObjectRow:
        o: ObjectRow | None = s.scalar(select(ObjectRow).where(
            ObjectRow.job_id == job_id, ObjectRow.object_id == object_id))
        if o is None:
            if not 1 <= object_id <= 255:
                raise PromptError(f"object_id must be in 1..255, got {object_id}")
            o = ObjectRow(job_id=job_id, object_id=object_id, name=f"object {object_id}",
                          colour=PALETTE[(object_id - 1) % len(PALETTE)], label_value=object_id)
            s.add(o)
            s.flush()
        return o

    def list_objects(self, job_id: str, who: Principal) -> list[dict[str, Any]]:
        """A job's objects, by id."""
        with self.sessions() as s:
            self._job(s, job_id, who)
            rows = s.scalars(select(ObjectRow).where(ObjectRow.job_id == job_id)
                             .order_by(ObjectRow.object_id))
            return [_object_dict(o) for o in rows]

    def object_labels(self, job_id: str) -> dict[int, int]:
        """object_id -> label value (no access check; worker use)."""
        with self.sessions() as s:
            rows = s.scalars(select(ObjectRow).where(ObjectRow.job_id == job_id)
                             .order_by(ObjectRow.object_id))
            return {o.object_id: o.label_value for o in rows}

    def upsert_object(self, job_id: str, who: Principal, object_id: int | None,
                      name: str | None, colour: str | None, label_value: int | None
                      ) -> dict[str, Any]:
        """Create (object_id None: next free id) or update an object's name/colour/label value."""
        with self.sessions.begin() as s:
            self._job(s, job_id, who)
            if object_id is None:
                top = s.scalar(select(func.max(ObjectRow.object_id))
                               .where(ObjectRow.job_id == job_id)) or 0
                object_id = int(top) + 1
            o = self._ensure_object(s, job_id, object_id)
            if name is not None:
                o.name = name[:100]
            if colour is not None:
                o.colour = colour
            if label_value is not None:
                if not 1 <= label_value <= 255:
                    raise InputError(f"label_value must be in 1..255, got {label_value}")
                clash = s.scalar(select(ObjectRow).where(
                    ObjectRow.job_id == job_id, ObjectRow.label_value == label_value,
                    ObjectRow.object_id != object_id))
                if clash is not None:
                    raise ConflictError(
                        f"label value {label_value} is already used by object {clash.object_id}"
                    )
                o.label_value = label_value
            out = _object_dict(o)
        self.audit(who.name, "object", job_id, **out)
        return out

    # ------------------------------------------------------------------ tasks
    def create_task(self, job_id: str, kind: str, params: dict[str, Any], who: Principal,
                    known_engines: list[str]) -> dict[str, Any]:
        """Validate a request against the job and record a queued task; returns its dict.

        params: ``slice_index``, ``box`` [x0,y0,x1,y1], ``points`` [[x,y],...], ``point_labels``,
        ``object_id`` (default 1), ``engine`` (default the settings' default engine).
        One transaction: the task, the object (created on first use, anchor slice), the job's
        last task and the audit entry are written together or not at all.
        """
        if kind not in TASK_KINDS:
            raise InputError(f"unknown task kind {kind!r}")
        engine = params.get("engine") or self.settings.default_engine
        if engine != "auto" and engine not in known_engines:
            raise InputError(f"unknown engine {engine!r}; known: {', '.join(known_engines)}")
        oid = 1 if params.get("object_id") is None else int(params["object_id"])
        if not 1 <= oid <= 255:
            raise PromptError(f"object_id must be in 1..255, got {oid}")
        _check_uuid(job_id)
        h = _hot()
        tid = str(uuid.uuid4())
        now = utcnow()
        with self.engine.begin() as conn:
            # the job row is locked first, so concurrent submissions to one job get distinct,
            # ordered sequence numbers (the lock is undone with everything else on an error)
            conn.execute(h.lock_task, {"jid": job_id, "p_tid": tid, "p_now": now})
            job = conn.execute(h.read_for_task, {"jid": job_id, "oid": oid}).first()
            if job is None or (job.owner != who.name and not who.is_reviewer):
                raise NotFoundError(f"no job {job_id} (or it belongs to another user)")
            shape = tuple(job.shape)
            anchor = job.anchor
            clean: dict[str, Any] = {"object_id": oid, "engine": engine}
            new_anchor: int | None = None
            if kind in (TaskKind.INITIAL_MASK, TaskKind.REFINE):
                if params.get("slice_index") is None:
                    raise PromptError(f"{kind} needs slice_index")
                z = int(params["slice_index"])
                prompts = Prompts.make(params.get("box"), params.get("points"),
                                       params.get("point_labels"))
                validate_prompts(z, prompts, shape)
                clean.update(slice_index=z, box=list(prompts.box) if prompts.box else None,
                             points=prompts.points.tolist(), point_labels=prompts.labels.tolist())
                if (kind == TaskKind.INITIAL_MASK and anchor != z) or anchor is None:
                    new_anchor = z
            else:
                z_opt = params.get("slice_index")
                if z_opt is None:
                    z_opt = anchor
                if z_opt is None:
                    raise ConflictError(
                        f"object {oid} has no mask yet: POST initial-mask before propagate"
                    )
                validate_slice(int(z_opt), shape)
                clean["slice_index"] = int(z_opt)
            if job.obj_pk is None:
                conn.execute(h.insert_object, {
                    "job_id": job_id, "object_id": oid, "name": f"object {oid}",
                    "colour": PALETTE[(oid - 1) % len(PALETTE)], "label_value": oid,
                    "anchor_slice": new_anchor})
            elif new_anchor is not None:
                conn.execute(h.set_anchor, {"pk": job.obj_pk, "p_anchor": new_anchor})
            conn.execute(h.insert_task, {
                "id": tid, "job_id": job_id, "kind": kind, "seq": int(job.top_seq or 0) + 1,
                "params": clean, "owner": who.name, "state": TaskState.QUEUED, "stage": TaskState.QUEUED,
                "progress": 0.0, "slices_done": 0, "slices_total": 0, "attempts": 0,
                "cancel_requested": False, "created": now})
            conn.execute(h.insert_audit, {"ts": now, "user": who.name, "action": kind,
                                          "job_id": job_id,
                                          "detail": {"task_id": tid, **clean}})
        return {"task_id": tid, "job_id": job_id, "kind": kind, "state": TaskState.QUEUED,
                "stage": TaskState.QUEUED, "progress": 0.0, "slices_done": 0, "slices_total": 0,
                "eta_seconds": None, "error": None, "attempts": 0, "version": None,
                "params": clean, "created": now.isoformat() + "Z", "finished": None}

    def get_task(self, task_id: str) -> TaskRow | None:
        """A task row (no access check)."""
        with self.sessions() as s:
            t: TaskRow | None = s.get(TaskRow, task_id)
            return t

    def task_for(self, job_id: str, task_id: str, who: Principal) -> dict[str, Any]:
        """A task of a visible job (one statement: the job's owner and the task row)."""
        _check_uuid(job_id)
        with self.engine.connect() as conn:
            row = conn.execute(_hot().task_for, {"jid": job_id, "tid": task_id}).first()
        if row is None or (row.job_owner != who.name and not who.is_reviewer):
            raise NotFoundError(f"no job {job_id} (or it belongs to another user)")
        if row.id is None:
            raise NotFoundError(f"no task {task_id} in job {job_id}")
        return task_dict(row)

    def job_status(self, job_id: str, who: Principal) -> dict[str, Any]:
        """The job's state: its latest task's state/stage/progress/ETA/error and mask version."""
        with self.sessions() as s:
            job = self._job(s, job_id, who)
            t = s.get(TaskRow, job.last_task) if job.last_task else None
            active = s.scalar(select(func.count()).select_from(TaskRow).where(
                TaskRow.job_id == job_id, TaskRow.state.in_(ACTIVE)))
            base = {"job_id": job_id, "current_version": job.current_version,
                    "active_tasks": int(active or 0)}
            if t is None:
                return {**base, "state": "ready", "stage": "uploaded", "progress": 0.0,
                        "slices_done": 0, "slices_total": 0, "eta_seconds": None, "error": None,
                        "task": None}
            d = task_dict(t)
            return {**base, "state": d["state"], "stage": d["stage"], "progress": d["progress"],
                    "slices_done": d["slices_done"], "slices_total": d["slices_total"],
                    "eta_seconds": d["eta_seconds"], "error": d["error"], "task": d}

    def cancel_task(self, job_id: str, who: Principal, task_id: str | None) -> int:
        """Ask queued/running tasks of a job (or one task) to stop; returns how many."""
        with self.sessions.begin() as s:
            self._job(s, job_id, who)
            q = update(TaskRow).where(TaskRow.job_id == job_id,
                                      TaskRow.state.in_(ACTIVE))
            if task_id:
                q = q.where(TaskRow.id == task_id)
            n = int(s.execute(q.values(cancel_requested=True)).rowcount)
        self.audit(who.name, "cancel", job_id, task_id=task_id)
        return n

    def is_cancel_requested(self, task_id: str) -> bool:
        """Whether a cancel was requested for a task (or it vanished)."""
        with self.engine.connect() as conn:
            v = conn.execute(select(_T.c.cancel_requested).where(_T.c.id == task_id)).scalar()
        return v is None or bool(v)

    def earlier_unfinished(self, job_id: str, seq: int) -> int:
        """How many tasks of a job submitted before task number ``seq`` are not finished."""
        with self.sessions() as s:
            return int(s.scalar(select(func.count()).select_from(TaskRow).where(
                TaskRow.job_id == job_id, TaskRow.seq < seq,
                TaskRow.state.in_(ACTIVE))) or 0)

    def claim(self, task_id: str, worker: str) -> tuple[str, Claim | None]:
        """Take a task for ``worker`` and read what its run needs, in one transaction.

        ("skipped", None) when it is finished, gone or held by a live worker (a redelivered
        duplicate does nothing); ("blocked", None) when earlier tasks of its job are
        unfinished; else ("claimed", Claim). Claiming is a conditional UPDATE, so two workers
        racing for one task cannot both win.
        """
        h = _hot()
        now = utcnow()
        cutoff = now - dt.timedelta(seconds=self.settings.stale_after_seconds)
        with self.engine.begin() as conn:
            t = conn.execute(h.claim_read, {"tid": task_id}).first()
            if t is None or t.state in TERMINAL or (
                    t.state == TaskState.RUNNING and t.heartbeat is not None and t.heartbeat >= cutoff):
                return "skipped", None
            if t.earlier:
                return "blocked", None
            n = conn.execute(h.claim, {"tid": task_id, "cutoff": cutoff, "p_worker": worker,
                                       "p_hb": now, "p_started": now}).rowcount
            if not n:
                return "skipped", None
            task = conn.execute(h.task_row, {"tid": task_id}).one()
            cur = done = None
            if t.job_version or t.attempts:  # a retry may find the version it already wrote
                for v in conn.execute(h.versions_read, {"jid": t.job_id, "num": t.job_version,
                                                        "tid": task_id}):
                    if v.number == t.job_version:
                        cur = v
                    if v.task_id == task_id:
                        done = int(v.number)
            labels_of = {int(o): int(lv) for o, lv in
                         conn.execute(h.labels_read, {"jid": t.job_id})}
        return "claimed", Claim(task=task, job_id=str(t.job_id), shape=tuple(t.job_shape),
                                modality=t.job_modality, version=cur, done_version=done,
                                generation=str(t.generation) if t.generation is not None
                                else "0", labels_of=labels_of)

    def claim_task(self, task_id: str, worker: str) -> TaskRow | None:
        """Atomically take a queued task (or a running one whose heartbeat went stale).

        Returns the claimed row, or None when it is finished, gone or held by a live worker
        (so a redelivered duplicate does nothing: tasks are idempotent).
        """
        cutoff = utcnow() - dt.timedelta(seconds=self.settings.stale_after_seconds)
        now = utcnow()
        with self.sessions.begin() as s:
            n = s.execute(
                update(TaskRow)
                .where(TaskRow.id == task_id, or_(
                    TaskRow.state == TaskState.QUEUED,
                    (TaskRow.state == TaskState.RUNNING) & (TaskRow.heartbeat < cutoff)))
                .values(state=TaskState.RUNNING, stage="starting", worker=worker, heartbeat=now,
                        started=now, attempts=TaskRow.attempts + 1)
            ).rowcount
            if not n:
                return None
            t: TaskRow | None = s.get(TaskRow, task_id)
            return t

    def heartbeat(self, task_id: str | list[str], worker: str) -> None:
        """Refresh the heartbeat of running tasks (one id or several) held by ``worker``."""
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(update(_T).where(_T.c.id.in_(ids), _T.c.worker == worker,
                                          _T.c.state == TaskState.RUNNING).values(heartbeat=utcnow()))

    def set_progress(self, task_id: str, **values: Any) -> None:
        """Update progress columns (stage, progress, slices_done, slices_total, eta_seconds)."""
        with self.engine.begin() as conn:
            conn.execute(update(_T).where(_T.c.id == task_id)
                         .values(heartbeat=utcnow(), **values))

    def finish_task(self, task_id: str, state: str, error: str | None = None,
                    version: int | None = None) -> TaskRow | None:
        """Record a task's end (succeeded/failed/cancelled)."""
        with self.sessions.begin() as s:
            return self._mark_finished(s, task_id, state, error, version)

    def _mark_finished(self, s: Any, task_id: str, state: str, error: str | None,
                       version: int | None) -> TaskRow | None:
        t: TaskRow | None = s.get(TaskRow, task_id)
        if t is None:
            return None
        if t.state == TaskState.SUCCEEDED:  # a slower duplicate run never overwrites a success
            return t
        t.state = state
        t.stage = state
        t.error = error
        t.finished = utcnow()
        if version is not None:
            t.version = version
        if state == TaskState.SUCCEEDED:
            t.progress = 1.0
            t.eta_seconds = 0.0
        return t

    def requeue(self, task_id: str, reason: str) -> bool:
        """Put a crashed task back to queued (False when it used up its attempts: then failed)."""
        with self.sessions.begin() as s:
            t = s.get(TaskRow, task_id)
            if t is None or t.state in TERMINAL:
                return False
            if t.attempts >= self.settings.max_attempts:
                t.state, t.stage, t.finished = TaskState.FAILED, TaskState.FAILED, utcnow()
                t.error = f"{reason}; gave up after {t.attempts} attempt(s)"
                return False
            t.state, t.stage, t.error = TaskState.QUEUED, "requeued", None
            return True

    def stale_tasks(self) -> list[str]:
        """Ids of running tasks whose heartbeat is older than ``stale_after_seconds``."""
        cutoff = utcnow() - dt.timedelta(seconds=self.settings.stale_after_seconds)
        with self.sessions() as s:
            return list(s.scalars(select(TaskRow.id).where(
                TaskRow.state == TaskState.RUNNING,
                or_(TaskRow.heartbeat < cutoff, TaskRow.heartbeat.is_(None)))))

    def unfinished_tasks(self) -> list[str]:
        """Ids of queued or running tasks, oldest first."""
        with self.sessions() as s:
            return list(s.scalars(select(TaskRow.id).where(
                TaskRow.state.in_(ACTIVE)).order_by(TaskRow.created)))

    def active_tasks(self) -> list[dict[str, Any]]:
        """Queued and running tasks, oldest first."""
        with self.sessions() as s:
            rows = s.scalars(select(TaskRow).where(TaskRow.state.in_(ACTIVE))
                             .order_by(TaskRow.created))
            return [{**task_dict(t), "worker": t.worker, "owner": t.owner} for t in rows]

    def task_counts(self) -> list[tuple[str, str, int]]:
        """(kind, state, count) over all tasks in the store (every worker's, for /metrics)."""
        with self.sessions() as s:
            rows = s.execute(select(TaskRow.kind, TaskRow.state, func.count())
                             .group_by(TaskRow.kind, TaskRow.state)).all()
        return [(str(k), str(st), int(n)) for k, st, n in rows]

    def queue_depth(self) -> dict[str, int]:
        """Counts of queued and running tasks."""
        with self.sessions() as s:
            rows = s.execute(select(TaskRow.state, func.count()).where(
                TaskRow.state.in_(ACTIVE)).group_by(TaskRow.state)).all()
        d = {TaskState.QUEUED.value: 0, TaskState.RUNNING.value: 0}
        d.update({str(k): int(v) for k, v in rows})
        return d

    # ------------------------------------------------------------------ versions
    def version_row(self, job_id: str, number: int | None = None) -> MaskVersionRow | None:
        """A version (default: the current one), or None when the job has no mask yet."""
        with self.sessions() as s:
            job = s.get(JobRow, job_id)
            if job is None:
                raise NotFoundError(f"no job {job_id}")
            n = job.current_version if number is None else number
            if n == 0:
                return None
            v: MaskVersionRow | None = s.scalar(select(MaskVersionRow).where(
                MaskVersionRow.job_id == job_id, MaskVersionRow.number == n))
            return v

    def version_for_task(self, task_id: str) -> MaskVersionRow | None:
        """The version a task already wrote (idempotent re-runs)."""
        with self.sessions() as s:
            v: MaskVersionRow | None = s.scalar(
                select(MaskVersionRow).where(MaskVersionRow.task_id == task_id))
            return v

    def add_version(self, job_id: str, labels: np.ndarray[Any, Any], *, author: str, source: str,
                    replay: list[dict[str, Any]], engine: str | None = None,
                    task_id: str | None = None, finish: bool = False) -> int:
        """Store a new label map version and make it current; returns its number.

        With ``finish`` the task ``task_id`` is marked succeeded in the same transaction.
        """
        data = files.encode_labels(labels)
        with self.engine.begin() as conn:
            n = self._add_version(conn, job_id, data, author=author, source=source,
                                  replay=replay, engine=engine, task_id=task_id)
            if finish and task_id is not None:
                self._finish_core(conn, task_id, TaskState.SUCCEEDED, None, n)
        return n

    def complete_task(self, job_id: str, task_id: str, labels: np.ndarray[Any, Any], *,
                      author: str, source: str, replay: list[dict[str, Any]],
                      engine: str | None, slices: tuple[int, int] | None = None
                      ) -> tuple[int, dict[str, Any]]:
        """Store a task's result as a new current version and mark the task succeeded, in one
        transaction (a crash leaves both or neither); returns the version number and the
        task's final dict (what the ``done`` event carries). ``slices``: the final
        (slices_done, slices_total) of a propagation (progress is written only now and then
        while it runs)."""
        data = files.encode_labels(labels)
        extra = None if slices is None else {"slices_done": slices[0], "slices_total": slices[1]}
        with self.engine.begin() as conn:
            n = self._add_version(conn, job_id, data, author=author, source=source,
                                  replay=replay, engine=engine, task_id=task_id)
            row = self._finish_core(conn, task_id, TaskState.SUCCEEDED, None, n, extra)
        if row is None:  # pragma: no cover - the task row goes with the job
            raise NotFoundError(f"task {task_id} was deleted")
        return n, task_dict(row)

    def _add_version(self, conn: Connection, job_id: str, data: bytes, *, author: str,
                     source: str, replay: list[dict[str, Any]], engine: str | None,
                     task_id: str | None) -> int:
        """Inside a transaction: lock the job (its row is updated first, so concurrent writers
        of one job queue here), number the version, write its file, record it as current."""
        h = _hot()
        now = utcnow()
        if not conn.execute(h.lock_job, {"jid": job_id, "p_now": now}).rowcount:
            raise NotFoundError(f"job {job_id} was deleted")
        nums = conn.execute(h.job_numbers, {"jid": job_id}).one()
        parent, n = int(nums.current_version or 0), int(nums.top or 0) + 1
        rel = f"versions/v{n:04d}.npz"
        replay = [dict(op, version=n) if op.get("op") == "set_mask" and op.get("version")
                  is None else op for op in replay]
        files.atomic_write_bytes(self.job_dir(job_id) / rel, data)
        conn.execute(h.insert_version, {
            "job_id": job_id, "number": n, "created": now, "author": author, "source": source,
            "engine": engine, "task_id": task_id, "path": rel, "replay": replay,
            "parent": parent, "reviewed": False})
        conn.execute(h.set_current, {"jid": job_id, "p_n": n, "p_engine": engine or None})
        return n

    def _finish_core(self, conn: Connection, task_id: str, state: str, error: str | None,
                     version: int | None, extra: dict[str, Any] | None = None) -> Any:
        """Inside a transaction: record a task's end (never overwriting a success); returns the
        task's row as it now is, or None when it is gone."""
        h = _hot()
        if state == TaskState.SUCCEEDED and version is not None:
            done, total = (extra or {}).get("slices_done"), (extra or {}).get("slices_total")
            conn.execute(h.succeed, {"tid": task_id, "p_fin": utcnow(), "p_v": version,
                                     "p_done": done, "p_total": total})
        else:
            values: dict[str, Any] = {"state": state, "stage": state, "error": error,
                                      "finished": utcnow()}
            if version is not None:
                values["version"] = version
            if state == TaskState.SUCCEEDED:
                values.update(progress=1.0, eta_seconds=0.0)
            if extra:
                values.update(extra)
            conn.execute(update(_T).where(_T.c.id == task_id, _T.c.state != TaskState.SUCCEEDED)
                         .values(**values))
        return conn.execute(h.task_row, {"tid": task_id}).first()

    def labels(self, job_id: str, who: Principal, number: int | None = None
               ) -> tuple[np.ndarray[Any, Any], int]:
        """The canonical label map ``(X, Y, Z)`` uint8 of a version (default current) and its number.

        A job without any mask yet gives all zeros and version 0.
        """
        with self.sessions() as s:
            job = self._job(s, job_id, who)
            shape = tuple(job.shape)
        v = self.version_row(job_id, number)
        if v is None:
            if number not in (None, 0):
                raise NotFoundError(f"job {job_id} has no version {number}")
            return np.zeros(shape, np.uint8), 0
        return files.load_labels(self.job_dir(job_id) / v.path), v.number

    def list_versions(self, job_id: str, who: Principal) -> list[dict[str, Any]]:
        """All versions of a job, oldest first."""
        with self.sessions() as s:
            job = self._job(s, job_id, who)
            rows = s.scalars(select(MaskVersionRow).where(MaskVersionRow.job_id == job_id)
                             .order_by(MaskVersionRow.number))
            return [_version_dict(v, job.current_version) for v in rows]

    def edit_mask(self, job_id: str, who: Principal, labels: np.ndarray[Any, Any]) -> int:
        """Store a user's edited label map (canonical) as a new version."""
        with self.sessions.begin() as s:
            job = self._job(s, job_id, who)
            if tuple(labels.shape) != tuple(job.shape):
                raise InputError(f"mask shape {labels.shape} != volume shape {tuple(job.shape)}")
            for val in np.unique(labels):
                if val == 0:
                    continue
                known = s.scalar(select(ObjectRow).where(ObjectRow.job_id == job_id,
                                                         ObjectRow.label_value == int(val)))
                if known is None:
                    taken = s.scalar(select(ObjectRow).where(ObjectRow.job_id == job_id,
                                                             ObjectRow.object_id == int(val)))
                    if taken is not None:
                        raise InputError(
                            f"label value {int(val)} is not an object of this job; "
                            "create the object first (POST .../objects)"
                        )
                    self._ensure_object(s, job_id, int(val))
        objects = self.object_labels(job_id)
        replay: list[dict[str, Any]] = [{"op": "set_mask", "version": None, "objects": objects}]
        n = self.add_version(job_id, labels.astype(np.uint8), author=who.name, source="edit",
                             replay=replay)
        self.audit(who.name, "edit", job_id, version=n)
        return n

    def move_current(self, job_id: str, who: Principal, direction: str) -> int:
        """Undo (to the current version's parent) or redo (to its newest child)."""
        with self.sessions.begin() as s:
            job = self._job(s, job_id, who)
            active = s.scalar(select(func.count()).select_from(TaskRow).where(
                TaskRow.job_id == job_id, TaskRow.state.in_(ACTIVE)))
            if active:
                raise ConflictError("a task is still running on this job; wait or cancel it")
            cur = job.current_version
            if direction == "undo":
                v = s.scalar(select(MaskVersionRow).where(MaskVersionRow.job_id == job_id,
                                                          MaskVersionRow.number == cur))
                if v is None:
                    raise ConflictError("nothing to undo: the job has no mask version yet")
                target = int(v.parent)
            else:
                child = s.scalar(select(func.max(MaskVersionRow.number)).where(
                    MaskVersionRow.job_id == job_id, MaskVersionRow.parent == cur))
                if child is None:
                    raise ConflictError("nothing to redo")
                target = int(child)
            job.current_version = target
            job.updated = utcnow()
        self.audit(who.name, direction, job_id, version=target)
        return target

    def review(self, job_id: str, who: Principal, number: int | None) -> dict[str, Any]:
        """Mark a version final (reviewer/admin) and copy it into the datastore for training."""
        if not who.is_reviewer:
            raise ForbiddenError("marking a mask reviewed needs the reviewer or admin role")
        with self.sessions() as s:
            job = self._job(s, job_id, who)
            modality, filename = job.modality, job.filename
        v = self.version_row(job_id, number)
        if v is None:
            raise ConflictError("this job has no mask version to review")
        labels = files.load_labels(self.job_dir(job_id) / v.path)
        objects = self.list_objects(job_id, who)
        added = Datastore(self.settings.datastore_dir).add(ReviewedCase(
            job_id=job_id, version=v.number, reviewed_by=who.name, modality=modality,
            image=files.canonical_path(self.job_dir(job_id)), labels=labels,
            objects=tuple(ReviewedObject(int(o["object_id"]), int(o["label_value"]),
                                         str(o["name"])) for o in objects),
            meta={"author": v.author, "source": v.source, "engine": v.engine,
                  "filename": filename, "objects": objects}))
        with self.sessions.begin() as s:
            s.execute(update(MaskVersionRow).where(MaskVersionRow.id == v.id)
                      .values(reviewed=True, reviewed_by=who.name))
        self.audit(who.name, "review", job_id, version=v.number)
        return {"job_id": job_id, "version": v.number, "reviewed": True,
                "datastore_case": added.case_dir}

    # ------------------------------------------------------------------ service-wide
    def get_kv(self, key: str, default: str = "") -> str:
        """A service-wide value."""
        with self.engine.connect() as conn:
            v = conn.execute(_hot().get_kv, {"key": key}).scalar()
        return default if v is None else str(v)

    def set_kv(self, key: str, value: str) -> None:
        """Set a service-wide value."""
        with self.sessions.begin() as s:
            row = s.get(KeyValue, key)
            if row is None:
                s.add(KeyValue(key=key, value=value))
            else:
                row.value = value

    def cleanup(self, who: Principal, older_than_days: int | None = None,
                include_reviewed: bool = False) -> dict[str, Any]:
        """Delete jobs idle for more than N days (default: retention_days); reviewer/admin only.

        Jobs with a reviewed version are kept unless ``include_reviewed``; datastore copies of
        reviewed masks are never deleted here.
        """
        if not who.is_reviewer:
            raise ForbiddenError("cleanup needs the reviewer or admin role")
        days = self.settings.retention_days if older_than_days is None else older_than_days
        if days < 0:
            raise InputError("older_than_days must be >= 0")
        cutoff = utcnow() - dt.timedelta(days=days)
        with self.sessions() as s:
            old = list(s.scalars(select(JobRow.id).where(JobRow.updated < cutoff)))
            reviewed = set(s.scalars(select(MaskVersionRow.job_id).where(
                MaskVersionRow.reviewed.is_(True))))
        deleted, kept = [], []
        for jid in old:
            if jid in reviewed and not include_reviewed:
                kept.append(jid)
                continue
            self.delete_job(jid, who)
            deleted.append(jid)
        swept = housekeeping.sweep_leftovers(self.settings)
        pruned = housekeeping.prune_audit(self.engine, self.settings.audit_retention_days)
        self.audit(who.name, "cleanup", None, days=days, deleted=len(deleted), kept=len(kept),
                   swept=len(swept.removed), audit_pruned=pruned)
        vacuumed = housekeeping.vacuum(self.engine)
        return {"deleted": deleted, "kept_reviewed": kept, "older_than_days": days,
                "leftovers_removed": swept.removed, "audit_entries_pruned": pruned,
                "vacuumed": vacuumed}


def require_reviewer(who: Principal, what: str) -> None:
    """ForbiddenError unless ``who`` is reviewer/admin."""
    if not who.is_reviewer:
        raise ForbiddenError(f"{what} needs the reviewer or admin role")

