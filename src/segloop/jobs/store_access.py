"""Job store, lowest part: the database and job folders, the audit log, users and API keys,
and the access check every job read goes through (annotators see only their own jobs;
reviewers and admins see all). Must not import the higher store parts, FastAPI, Celery or torch.
"""

from __future__ import annotations

import json
import secrets
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select

from segloop.config import Settings
from segloop.errors import InputError
from segloop.jobs.db import AuditEntry, JobRow, UserRow, make_engine, make_sessionmaker
from segloop.jobs.errors import ConflictError, NotFoundError
from segloop.jobs.records import ROLES, AuditRecord, Principal, UserRecord, hash_key

__all__ = ["AccessStore"]


class AccessStore:
    """The database, the job folders under ``home``, the audit log and the users."""

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

    def audit_log(self, limit: int = 200, user: str | None = None) -> list[AuditRecord]:
        """The newest audit entries, newest first."""
        with self.sessions() as s:
            q = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
            if user:
                q = q.where(AuditEntry.user == user)
            return [AuditRecord(ts=a.ts.isoformat() + "Z", user=a.user, action=a.action,
                                job_id=a.job_id, detail=a.detail) for a in s.scalars(q)]

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

    def list_users(self) -> list[UserRecord]:
        """Users and roles (never keys)."""
        with self.sessions() as s:
            return [UserRecord(name=u.name, role=u.role, created=u.created.isoformat() + "Z")
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

    def _job(self, s: Any, job_id: str, who: Principal) -> JobRow:
        try:
            uuid.UUID(job_id)
        except ValueError:
            raise NotFoundError(f"no job {job_id!r}: job ids are UUIDs") from None
        job: JobRow | None = s.get(JobRow, job_id)
        if job is None or (job.owner != who.name and not who.is_reviewer):
            raise NotFoundError(f"no job {job_id} (or it belongs to another user)")
        return job

