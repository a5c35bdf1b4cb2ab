"""Job store: tasks (submit, status, cancel, claim, heartbeat, progress, the one path that
records a task's end, requeue after a crash, counts). Must not import the higher store
parts (versions, review), FastAPI, Celery or torch.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.engine import Connection

from segloop.errors import InputError, PromptError
from segloop.jobs.db import TaskRow, utcnow
from segloop.jobs.errors import ConflictError, NotFoundError
from segloop.jobs.records import (
    PALETTE,
    TASK_KINDS,
    ActiveTaskRecord,
    Claim,
    ClaimOutcome,
    JobStatus,
    Principal,
    TaskRecord,
    check_uuid,
)
from segloop.jobs.segmentstep import clean_segment
from segloop.jobs.statements import TASKS as _T
from segloop.jobs.statements import hot as _hot
from segloop.jobs.states import ACTIVE, TERMINAL, TaskKind, TaskState
from segloop.jobs.store_jobs import JobsStore, anchor_planes, prompt_tasks_query
from segloop.types import Plane, Prompts, validate_prompts, validate_slice

__all__ = ["TaskStore"]


def _roi(raw: Any, shape: tuple[int, ...]) -> list[list[int]]:
    """A task's ``roi``: three inclusive ``[lo, hi]`` voxel ranges inside the volume."""
    try:
        roi = [[int(a), int(b)] for a, b in raw]
    except (TypeError, ValueError):
        raise PromptError(f"roi must be [[x0, x1], [y0, y1], [z0, z1]], got {raw!r}") from None
    if len(roi) != 3 or not all(0 <= a <= b < n for (a, b), n in zip(roi, shape, strict=False)):
        raise PromptError(f"roi {raw!r} must be three [lo, hi] ranges with lo <= hi inside the "
                          f"volume {list(shape)}")
    return roi


def _plane(raw: Any, shape: tuple[int, ...]) -> Plane | None:
    """The ``axis`` parameter: the plane a prompt was drawn on (None when not given)."""
    if raw is None:
        return None
    try:
        plane = Plane(raw)
    except ValueError:
        raise PromptError(f"axis must be one of {', '.join(p.value for p in Plane)}, "
                          f"got {raw!r}") from None
    if plane is not Plane.AXIAL and shape[2] == 1:
        raise PromptError(f"a one-slice image has no {plane.value} slices: leave axis out")
    return plane


def _check_range_plane(params: dict[str, Any], shape: tuple[int, ...], plane: Plane) -> None:
    """A slice range set on another plane's slices than the step's is refused, not misread."""
    ranged = params.get("first_slice") is not None or params.get("last_slice") is not None
    raw = params.get("range_axis")
    if ranged and raw is not None and _plane(raw, shape) is not plane:
        raise PromptError(f"the slice range is of {raw} slices but this step runs along "
                          f"{plane.value} slices: clear the range or set it on a "
                          f"{plane.value} slice")


def _anchor_plane(conn: Connection, job_id: str, oid: int) -> Plane:
    """The plane of an object's anchor slice (see :func:`anchor_planes`)."""
    return anchor_planes(conn.execute(prompt_tasks_query(job_id))).get(oid, Plane.AXIAL)


class TaskStore(JobsStore):
    """Tasks: from submission to their recorded end."""

    def create_task(self, job_id: str, kind: str, params: dict[str, Any], who: Principal,
                    known_engines: list[str]) -> TaskRecord:
        """Validate a request against the job and record a queued task; returns its record.

        params: ``slice_index``, ``box`` [x0,y0,x1,y1], ``points`` [[x,y],...], ``point_labels``,
        ``object_id`` (default 1); a ``segment`` task also ``clear``, ``propagate`` and
        ``refine`` (:mod:`segloop.jobs.segmentstep`); ``engine`` (default the settings'
        default engine), ``roi`` (optional [[x0, x1], [y0, y1], [z0, z1]], inclusive: the step
        changes the mask inside it only).
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
        check_uuid(job_id)
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
            plane = _plane(params.get("axis"), shape)
            starts = kind in (TaskKind.INITIAL_MASK, TaskKind.SEGMENT)  # sets the anchor
            if starts or kind == TaskKind.REFINE:
                if params.get("slice_index") is None and shape[2] == 1:
                    params = {**params, "slice_index": 0}  # a 2D image: its one slice
                if params.get("slice_index") is None:
                    raise PromptError(f"{kind} needs slice_index")
                z = int(params["slice_index"])
                prompts = Prompts.make(params.get("box"), params.get("points"),
                                       params.get("point_labels"))
                validate_prompts(z, prompts, shape, plane or Plane.AXIAL)
                clean.update(slice_index=z, box=list(prompts.box) if prompts.box else None,
                             points=prompts.points.tolist(), point_labels=prompts.labels.tolist())
                if (starts and anchor != z) or anchor is None:
                    new_anchor = z
                if kind == TaskKind.SEGMENT:
                    clean.update(clean_segment(params, shape, plane or Plane.AXIAL))
            else:
                z_opt = params.get("slice_index")
                if z_opt is None:
                    z_opt = anchor
                    drawn = _anchor_plane(conn, job_id, oid)  # from where the prompt was drawn
                    if plane is not None and plane is not drawn and anchor is not None:
                        raise PromptError(f"object {oid} was drawn on a {drawn.value} slice: "
                                          f"give slice_index to propagate along {plane.value}")
                    plane = drawn
                if z_opt is None:
                    raise ConflictError(
                        f"object {oid} has no mask yet: POST initial-mask before propagate"
                    )
                validate_slice(int(z_opt), shape, plane or Plane.AXIAL)
                clean["slice_index"] = int(z_opt)
            if plane is not None and plane is not Plane.AXIAL:  # axial steps record no axis
                clean["axis"] = plane.value
            if params.get("roi") is not None:
                clean["roi"] = _roi(params["roi"], shape)
            if kind != TaskKind.INITIAL_MASK:  # the slice range that stops a leak
                _check_range_plane(params, shape, plane or Plane.AXIAL)
                for key in ("first_slice", "last_slice"):
                    if params.get(key) is not None:
                        validate_slice(int(params[key]), shape, plane or Plane.AXIAL)
                        clean[key] = int(params[key])
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
        return TaskRecord(
            task_id=tid, job_id=job_id, kind=kind, state=TaskState.QUEUED,
            stage=TaskState.QUEUED, progress=0.0, slices_done=0, slices_total=0,
            eta_seconds=None, error=None, attempts=0, version=None, params=clean,
            created=now.isoformat() + "Z", finished=None)

    def get_task(self, task_id: str) -> TaskRow | None:
        """A task row (no access check)."""
        with self.sessions() as s:
            t: TaskRow | None = s.get(TaskRow, task_id)
            return t

    def task_for(self, job_id: str, task_id: str, who: Principal) -> TaskRecord:
        """A task of a visible job (one statement: the job's owner and the task row)."""
        check_uuid(job_id)
        with self.engine.connect() as conn:
            row = conn.execute(_hot().task_for, {"jid": job_id, "tid": task_id}).first()
        if row is None or (row.job_owner != who.name and not who.is_reviewer):
            raise NotFoundError(f"no job {job_id} (or it belongs to another user)")
        if row.id is None:
            raise NotFoundError(f"no task {task_id} in job {job_id}")
        return TaskRecord.from_row(row)

    def job_status(self, job_id: str, who: Principal) -> JobStatus:
        """The job's state: its latest task's state/stage/progress/ETA/error and mask version."""
        with self.sessions() as s:
            job = self._job(s, job_id, who)
            t = s.get(TaskRow, job.last_task) if job.last_task else None
            active = s.scalar(select(func.count()).select_from(TaskRow).where(
                TaskRow.job_id == job_id, TaskRow.state.in_(ACTIVE)))
            current, n_active = job.current_version, int(active or 0)
            if t is None:
                return JobStatus(job_id=job_id, current_version=current, active_tasks=n_active,
                                 state="ready", stage="uploaded", progress=0.0, slices_done=0,
                                 slices_total=0, eta_seconds=None, error=None, task=None)
            d = TaskRecord.from_row(t)
            return JobStatus(job_id=job_id, current_version=current, active_tasks=n_active,
                             state=d.state, stage=d.stage, progress=d.progress,
                             slices_done=d.slices_done, slices_total=d.slices_total,
                             eta_seconds=d.eta_seconds, error=d.error, task=d)

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

    def claim(self, task_id: str, worker: str) -> tuple[ClaimOutcome, Claim | None]:
        """Take a task for ``worker`` and read what its run needs, in one transaction.

        (SKIPPED, None) when it is finished, gone or held by a live worker (a redelivered
        duplicate does nothing); (BLOCKED, None) when earlier tasks of its job are
        unfinished; else (CLAIMED, Claim). Claiming is a conditional UPDATE, so two workers
        racing for one task cannot both win.
        """
        h = _hot()
        now = utcnow()
        cutoff = now - dt.timedelta(seconds=self.settings.stale_after_seconds)
        with self.engine.begin() as conn:
            t = conn.execute(h.claim_read, {"tid": task_id}).first()
            if t is None or t.state in TERMINAL or (
                    t.state == TaskState.RUNNING and t.heartbeat is not None and t.heartbeat >= cutoff):
                return ClaimOutcome.SKIPPED, None
            if t.earlier:
                return ClaimOutcome.BLOCKED, None
            task = conn.execute(h.claim, {"tid": task_id, "cutoff": cutoff, "p_worker": worker,
                                          "p_hb": now, "p_started": now}).first()
            if task is None:
                return ClaimOutcome.SKIPPED, None
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
        return ClaimOutcome.CLAIMED, Claim(task=task, job_id=str(t.job_id), shape=tuple(t.job_shape),
                                modality=t.job_modality, version=cur, done_version=done,
                                generation=str(t.generation) if t.generation is not None
                                else "0", labels_of=labels_of)

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
                    version: int | None = None) -> Any:
        """Record a task's end (succeeded/failed/cancelled; never overwriting a success);
        returns the task's row as it now is, or None when it is gone."""
        with self.engine.begin() as conn:
            return self._finish_core(conn, task_id, state, error, version)

    def requeue(self, task_id: str, reason: str) -> bool:
        """Put a crashed task back to queued (False when it used up its attempts: then failed)."""
        with self.engine.begin() as conn:
            t = conn.execute(_hot().task_row, {"tid": task_id}).first()
            if t is None or t.state in TERMINAL:
                return False
            if t.attempts >= self.settings.max_attempts:
                self._finish_core(conn, task_id, TaskState.FAILED,
                                  f"{reason}; gave up after {t.attempts} attempt(s)", None)
                return False
            conn.execute(update(_T).where(_T.c.id == task_id).values(
                state=TaskState.QUEUED, stage="requeued", error=None))
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

    def active_tasks(self) -> list[ActiveTaskRecord]:
        """Queued and running tasks, oldest first."""
        with self.sessions() as s:
            rows = s.scalars(select(TaskRow).where(TaskRow.state.in_(ACTIVE))
                             .order_by(TaskRow.created))
            return [ActiveTaskRecord.from_task_row(t) for t in rows]

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

    def _finish_core(self, conn: Connection, task_id: str, state: str, error: str | None,
                     version: int | None, extra: dict[str, Any] | None = None) -> Any:
        """Inside a transaction: record a task's end (never overwriting a success); returns the
        task's row as it now is, or None when it is gone."""
        h = _hot()
        if state == TaskState.SUCCEEDED and version is not None:
            done, total = (extra or {}).get("slices_done"), (extra or {}).get("slices_total")
            row = conn.execute(h.succeed, {"tid": task_id, "p_fin": utcnow(), "p_v": version,
                                           "p_done": done, "p_total": total}).first()
            if row is not None:  # else it had succeeded already: read it as it is
                return row
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

