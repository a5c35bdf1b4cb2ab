"""Job store: jobs (upload, read, list, delete) and their objects (names, colours, label
values). Must not import the higher store parts (tasks, versions, review), FastAPI, Celery or
torch.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update

from segloop.errors import InputError, PromptError, SegloopError
from segloop.fsio import replace_dir
from segloop.jobs import files
from segloop.jobs.db import JobRow, MaskVersionRow, ObjectRow, TaskRow
from segloop.jobs.errors import ConflictError, ForbiddenError, NotFoundError
from segloop.jobs.ingest import IngestResult
from segloop.jobs.ingest import ingest as ingest_here
from segloop.jobs.records import PALETTE, JobRecord, ObjectRecord, Principal
from segloop.jobs.states import ACTIVE, TaskKind
from segloop.jobs.store_access import AccessStore
from segloop.types import Plane

__all__ = ["JobsStore", "anchor_planes", "prompt_tasks_query"]



def prompt_tasks_query(job_id: str) -> Any:
    """The kind and params of a job's initial-mask, segment and refine tasks, newest first."""
    return (select(TaskRow.kind, TaskRow.params)
            .where(TaskRow.job_id == job_id,
                   TaskRow.kind.in_([TaskKind.INITIAL_MASK, TaskKind.SEGMENT,
                                     TaskKind.REFINE]))
            .order_by(TaskRow.seq.desc()))


def anchor_planes(rows: Any) -> dict[int, Plane]:
    """object id -> the plane of its anchor slice, from ``prompt_tasks_query`` rows (newest first):
    that of its latest initial mask (or segment task), else that of its first refine (which set the anchor of
    an object never given an initial mask)."""
    out: dict[int, Plane] = {}
    final: set[int] = set()
    for kind, params in rows:
        p = params or {}
        oid = int(p.get("object_id", 1))
        if oid in final:
            continue
        out[oid] = Plane(p.get("axis") or Plane.AXIAL)
        if kind in (TaskKind.INITIAL_MASK, TaskKind.SEGMENT):
            final.add(oid)
    return out


class JobsStore(AccessStore):
    """Jobs and their objects."""

    def create_job(self, upload: Path, filename: str, owner: Principal,
                   ingest: Callable[[Path, Path, files.UploadLimits], IngestResult] = ingest_here,
                   ) -> JobRecord:
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
        return JobRecord.from_row(row)

    def get_job(self, job_id: str, who: Principal) -> JobRecord:
        """A job's record; NotFoundError when unknown or not visible to ``who``."""
        with self.sessions() as s:
            return JobRecord.from_row(self._job(s, job_id, who))

    def source_rel(self, job_id: str) -> str:
        """Where the upload lies inside the job folder (no access check)."""
        with self.sessions() as s:
            job = s.get(JobRow, job_id)
            if job is None:
                raise NotFoundError(f"no job {job_id}")
            return str(job.source_rel)

    def list_jobs(self, who: Principal, all_users: bool = False) -> list[JobRecord]:
        """The caller's jobs (reviewers/admins: everyone's with ``all_users``), newest first."""
        with self.sessions() as s:
            q = select(JobRow).order_by(JobRow.created.desc())
            if not (all_users and who.is_reviewer):
                q = q.where(JobRow.owner == who.name)
            return [JobRecord.from_row(j) for j in s.scalars(q)]

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

    def list_objects(self, job_id: str, who: Principal) -> list[ObjectRecord]:
        """A job's objects, by id."""
        with self.sessions() as s:
            self._job(s, job_id, who)
            rows = s.scalars(select(ObjectRow).where(ObjectRow.job_id == job_id)
                             .order_by(ObjectRow.object_id))
            objs = list(rows)
            planes = anchor_planes(s.execute(prompt_tasks_query(job_id)).all())
            return [ObjectRecord.from_row(o, planes.get(o.object_id, Plane.AXIAL))
                    for o in objs]

    def object_labels(self, job_id: str) -> dict[int, int]:
        """object_id -> label value (no access check; worker use)."""
        with self.sessions() as s:
            rows = s.scalars(select(ObjectRow).where(ObjectRow.job_id == job_id)
                             .order_by(ObjectRow.object_id))
            return {o.object_id: o.label_value for o in rows}

    def upsert_object(self, job_id: str, who: Principal, object_id: int | None,
                      name: str | None, colour: str | None, label_value: int | None
                      ) -> ObjectRecord:
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
            out = ObjectRecord.from_row(o)
        self.audit(who.name, "object", job_id, **out.as_dict())
        return out

