"""Job store: mask versions (store a result, read labels, list, edit, undo/redo). Must not
import the review part, FastAPI, Celery or torch.

A version's file is written durably (fsync of the file and its folder) on a helper thread
while its rows are written in the same transaction; the transaction commits only after the
file is on disk, so a committed version always has its file.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from segloop.errors import InputError
from segloop.jobs import files
from segloop.jobs.db import JobRow, MaskVersionRow, ObjectRow, TaskRow, utcnow
from segloop.jobs.errors import ConflictError, NotFoundError
from segloop.jobs.records import Principal, TaskRecord, VersionRecord
from segloop.jobs.statements import hot as _hot
from segloop.jobs.states import ACTIVE, TaskState
from segloop.jobs.store_tasks import TaskStore

__all__ = ["VersionStore"]


class _Flush(threading.Thread):
    """A version file's atomic, durable write (temp file, fsync, rename, fsync of the folder)
    on its own thread, so the version's rows are written while the disk works."""

    def __init__(self, path: Path, data: bytes) -> None:
        super().__init__(name="segloop-version-flush", daemon=True)
        self.path, self.data = path, data
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            files.atomic_write_bytes(self.path, self.data)
        except BaseException as exc:  # re-raised by wait(), in the transaction's thread
            self.error = exc

    def wait(self) -> None:
        """Until the file is durable; its write's error, if any."""
        self.join()
        if self.error is not None:
            raise self.error


def _stale(current: int, base: int) -> ConflictError:
    """The 409 of a write made on a version that is no longer current."""
    return ConflictError(
        f"the mask changed meanwhile: version {current} is current, this edit was made on "
        f"version {base}; load version {current} and apply the edit again")


class VersionStore(TaskStore):
    """Mask versions of a job."""

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

    def add_version(self, job_id: str, labels: np.ndarray[Any, Any], *, author: str, source: str,
                    replay: list[dict[str, Any]], engine: str | None = None,
                    task_id: str | None = None, finish: bool = False,
                    expect_version: int | None = None) -> int:
        """Store a new label map version and make it current; returns its number.

        With ``finish`` the task ``task_id`` is marked succeeded in the same transaction.
        With ``expect_version`` the version is stored only if that version is still the
        current one (checked under the job's lock, so two writers on the same base cannot
        both succeed); otherwise :class:`ConflictError` and nothing is stored.
        """
        data = files.encode_labels(labels)
        with self.engine.begin() as conn:
            n, flush = self._add_version(conn, job_id, data, author=author, source=source,
                                         replay=replay, engine=engine, task_id=task_id,
                                         expect_version=expect_version)
            try:
                if finish and task_id is not None:
                    self._finish_core(conn, task_id, TaskState.SUCCEEDED, None, n)
            finally:
                flush.wait()  # the file and its folder are on disk before the commit
        return n

    def complete_task(self, job_id: str, task_id: str, labels: np.ndarray[Any, Any], *,
                      author: str, source: str, replay: list[dict[str, Any]],
                      engine: str | None, slices: tuple[int, int] | None = None,
                      while_flushing: Callable[[], None] | None = None
                      ) -> tuple[int, TaskRecord]:
        """Store a task's result as a new current version and mark the task succeeded, in one
        transaction (a crash leaves both or neither); returns the version number and the
        task's final record (what the ``done`` event carries). ``slices``: the final
        (slices_done, slices_total) of a propagation (progress is written only now and then
        while it runs). ``while_flushing``: short work called once the rows are written, while
        the file may still be on its way to the disk (before the wait for it and the commit):
        another thread's work started there overlaps the fsync instead of this thread's CPU
        work (the label map's encoding, the rows)."""
        data = files.encode_labels(labels)
        extra = None if slices is None else {"slices_done": slices[0], "slices_total": slices[1]}
        with self.engine.begin() as conn:
            n, flush = self._add_version(conn, job_id, data, author=author, source=source,
                                         replay=replay, engine=engine, task_id=task_id)
            try:
                row = self._finish_core(conn, task_id, TaskState.SUCCEEDED, None, n, extra)
                if while_flushing is not None:
                    while_flushing()
            finally:
                flush.wait()  # the file and its folder are on disk before the commit
        if row is None:  # pragma: no cover - the task row goes with the job
            raise NotFoundError(f"task {task_id} was deleted")
        return n, TaskRecord.from_row(row)

    def _add_version(self, conn: Connection, job_id: str, data: bytes, *, author: str,
                     source: str, replay: list[dict[str, Any]], engine: str | None,
                     task_id: str | None, expect_version: int | None = None
                     ) -> tuple[int, _Flush]:
        """Inside a transaction: lock the job (its row is updated first, so concurrent writers
        of one job queue here), check that ``expect_version`` (if given) is still current,
        number the version, start writing its file, record it as current. Returns the number
        and the file's write, which the caller must :meth:`~_Flush.wait` for before the
        transaction ends (on every path: the commit must not come before the file is durable,
        nor a retry race an abandoned write)."""
        h = _hot()
        now = utcnow()
        nums = conn.execute(h.lock_job, {"jid": job_id, "p_now": now}).first()
        if nums is None:
            raise NotFoundError(f"job {job_id} was deleted")
        parent, n = int(nums.current_version or 0), int(nums.top or 0) + 1
        if expect_version is not None and parent != expect_version:
            raise _stale(parent, expect_version)
        rel = f"versions/v{n:04d}.npz"
        replay = [dict(op, version=n) if op.get("op") == "set_mask" and op.get("version")
                  is None else op for op in replay]
        flush = _Flush(self.job_dir(job_id) / rel, data)
        flush.start()  # its fsyncs wait for the disk while the rows below are written
        try:
            conn.execute(h.insert_version, {
                "job_id": job_id, "number": n, "created": now, "author": author,
                "source": source, "engine": engine, "task_id": task_id, "path": rel,
                "replay": replay, "parent": parent, "reviewed": False})
            conn.execute(h.set_current, {"jid": job_id, "p_n": n, "p_engine": engine or None})
        except BaseException:
            flush.wait()
            raise
        return n, flush

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

    def list_versions(self, job_id: str, who: Principal) -> list[VersionRecord]:
        """All versions of a job, oldest first."""
        with self.sessions() as s:
            job = self._job(s, job_id, who)
            rows = s.scalars(select(MaskVersionRow).where(MaskVersionRow.job_id == job_id)
                             .order_by(MaskVersionRow.number))
            return [VersionRecord.from_row(v, job.current_version) for v in rows]

    def edit_mask(self, job_id: str, who: Principal, labels: np.ndarray[Any, Any],
                  source: str = "edit", expect_version: int | None = None) -> int:
        """Store a user's edited label map (canonical) as a new version (``source``: what made
        it, e.g. ``edit`` or ``edit:remove-region``). ``expect_version``: the version the
        edit was made on; when another version is current by the time it is stored,
        :class:`ConflictError` (409) and nothing is stored (a compare-and-set under the job's
        lock, see :meth:`add_version`)."""
        with self.sessions.begin() as s:
            job = self._job(s, job_id, who)
            if tuple(labels.shape) != tuple(job.shape):
                raise InputError(f"mask shape {labels.shape} != volume shape {tuple(job.shape)}")
            if expect_version is not None and job.current_version != expect_version:
                raise _stale(job.current_version, expect_version)  # early: no objects made
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
        n = self.add_version(job_id, labels.astype(np.uint8), author=who.name, source=source,
                             replay=replay, expect_version=expect_version)
        self.audit(who.name, "edit", job_id, version=n, source=source)
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

