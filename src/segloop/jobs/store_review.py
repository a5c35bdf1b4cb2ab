"""Job store: review (a version marked final and copied into the datastore), service-wide
values and retention cleanup. Must not import FastAPI, Celery or torch.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from segloop.datastore.local import Datastore, ReviewedCase, ReviewedObject
from segloop.errors import InputError
from segloop.jobs import files, housekeeping
from segloop.jobs.db import JobRow, KeyValue, MaskVersionRow, utcnow
from segloop.jobs.errors import ConflictError, ForbiddenError
from segloop.jobs.image2d_job import DISPLAY_NAME, is_2d_format
from segloop.jobs.records import CleanupReport, Principal, ReviewRecord
from segloop.jobs.statements import hot as _hot
from segloop.jobs.store_versions import VersionStore

__all__ = ["ReviewStore"]


class ReviewStore(VersionStore):
    """Review, service-wide values and cleanup."""

    def review(self, job_id: str, who: Principal, number: int | None) -> ReviewRecord:
        """Mark a version final (reviewer/admin) and copy it into the datastore for training."""
        if not who.is_reviewer:
            raise ForbiddenError("marking a mask reviewed needs the reviewer or admin role")
        with self.sessions() as s:
            job = self._job(s, job_id, who)
            modality, filename = job.modality, job.filename
            image2d = is_2d_format(job.source_format)
        v = self.version_row(job_id, number)
        if v is None:
            raise ConflictError("this job has no mask version to review")
        labels = files.load_labels(self.job_dir(job_id) / v.path)
        objects = self.list_objects(job_id, who)
        picture = self.job_dir(job_id) / DISPLAY_NAME if image2d else None
        added = Datastore(self.settings.datastore_dir).add(ReviewedCase(
            job_id=job_id, version=v.number, reviewed_by=who.name, modality=modality,
            image=files.canonical_path(self.job_dir(job_id)), labels=labels,
            picture=picture if picture is not None and picture.is_file() else None,
            objects=tuple(ReviewedObject(o.object_id, o.label_value, o.name) for o in objects),
            meta={"author": v.author, "source": v.source, "engine": v.engine,
                  "filename": filename, "objects": [o.as_dict() for o in objects]}))
        with self.sessions.begin() as s:
            s.execute(update(MaskVersionRow).where(MaskVersionRow.id == v.id)
                      .values(reviewed=True, reviewed_by=who.name))
        self.audit(who.name, "review", job_id, version=v.number)
        return ReviewRecord(job_id=job_id, version=v.number, reviewed=True,
                            datastore_case=added.case_dir)

    # ------------------------------------------------------------------ service-wide
    def get_kv(self, key: str, default: str = "") -> str:
        """A service-wide value."""
        with self.engine.connect() as conn:
            v = conn.execute(_hot().get_kv, {"key": key}).scalar()
        return default if v is None else str(v)

    def set_kv(self, key: str, value: str) -> None:
        """Set a service-wide value (two processes setting a new key together: the later wins)."""
        try:
            with self.sessions.begin() as s:
                row = s.get(KeyValue, key)
                if row is None:
                    s.add(KeyValue(key=key, value=value))
                else:
                    row.value = value
        except IntegrityError:  # another process inserted the key first: overwrite its value
            with self.sessions.begin() as s:
                s.execute(update(KeyValue).where(KeyValue.key == key).values(value=value))

    def cleanup(self, who: Principal, older_than_days: int | None = None,
                include_reviewed: bool = False) -> CleanupReport:
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
        return CleanupReport(deleted=deleted, kept_reviewed=kept, older_than_days=days,
                             leftovers_removed=swept.removed, audit_entries_pruned=pruned,
                             vacuumed=vacuumed)
