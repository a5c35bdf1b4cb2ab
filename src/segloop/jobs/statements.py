"""The job store's per-task SQL statements (SQLAlchemy Core), built once with bound parameters,
and the table handles they use.

SQLAlchemy then reuses their compiled form: no statement construction or cache-key work per
task. Writes whose result the caller needs next return it (``UPDATE ... RETURNING``, SQLite
>= 3.35 and PostgreSQL): the claimed task row, the succeeded task row, the locked job's
version numbers, so no statement is followed by a read of what it just wrote. Must not
import the store modules, FastAPI, Celery or torch.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

from sqlalchemy import (
    DateTime,
    Integer,
    String,
    Table,
    and_,
    bindparam,
    func,
    insert,
    or_,
    select,
    update,
)

from segloop.jobs.db import AuditEntry, JobRow, KeyValue, MaskVersionRow, ObjectRow, TaskRow
from segloop.jobs.states import ACTIVE, TaskState

__all__ = ["AUDIT", "JOBS", "KV", "OBJECTS", "TASKS", "VERSIONS", "hot"]

JOBS: Table = JobRow.__table__  # type: ignore[assignment]
TASKS: Table = TaskRow.__table__  # type: ignore[assignment]
VERSIONS: Table = MaskVersionRow.__table__  # type: ignore[assignment]
OBJECTS: Table = ObjectRow.__table__  # type: ignore[assignment]
AUDIT: Table = AuditEntry.__table__  # type: ignore[assignment]
KV: Table = KeyValue.__table__  # type: ignore[assignment]
_J, _T, _V, _O, _A, _KV = JOBS, TASKS, VERSIONS, OBJECTS, AUDIT, KV


@functools.cache
def hot() -> SimpleNamespace:
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
            attempts=_T.c.attempts + 1).returning(*_T.c),  # the claimed row: no re-read
        task_row=select(*_T.c).where(_T.c.id == b("tid")),
        succeed=update(_T).where(_T.c.id == b("tid"), _T.c.state != TaskState.SUCCEEDED).values(
            state=TaskState.SUCCEEDED, stage=TaskState.SUCCEEDED, error=None,
            finished=b("p_fin", type_=DateTime()), version=b("p_v", type_=Integer()),
            progress=1.0, eta_seconds=0.0,
            slices_done=func.coalesce(b("p_done", type_=Integer()), _T.c.slices_done),
            slices_total=func.coalesce(b("p_total", type_=Integer()), _T.c.slices_total))
        .returning(*_T.c),  # the row the done event carries: no re-read
        versions_read=select(_V.c.number, _V.c.replay, _V.c.path, _V.c.task_id).where(
            _V.c.job_id == b("jid"), or_(_V.c.number == b("num"), _V.c.task_id == b("tid"))),
        labels_read=select(_O.c.object_id, _O.c.label_value).where(_O.c.job_id == b("jid")),
        # versions
        # lock the job row and read its version numbers in one round trip
        lock_job=update(_J).where(_J.c.id == b("jid")).values(
            updated=b("p_now", type_=DateTime())).returning(
            # (RETURNING names columns unqualified: the subquery is keyed by the parameter)
            _J.c.current_version, select(func.max(_V.c.number))
            .where(_V.c.job_id == b("jid")).scalar_subquery().label("top")),
        insert_version=insert(_V),
        set_current=update(_J).where(_J.c.id == b("jid")).values(
            current_version=b("p_n", type_=Integer()),
            engine=func.coalesce(b("p_engine", type_=String()), _J.c.engine)),
        get_kv=select(_KV.c.value).where(_KV.c.key == b("key")),
    )
