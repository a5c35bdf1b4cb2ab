"""The job store: SQLAlchemy tables for users, jobs, objects, tasks, mask versions and the audit log.

SQLite (default, a file under ``SEGLOOP_HOME``) or PostgreSQL (any SQLAlchemy URL; a
``?options=-csearch_path%3D<schema>`` suffix selects a schema). Arrays never go in the
database: mask versions are files under the job folder, rows hold their paths. Imports
SQLAlchemy only; never torch, FastAPI or Celery.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.ism, segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

__all__ = [
    "AuditEntry",
    "Base",
    "JobRow",
    "KeyValue",
    "MaskVersionRow",
    "ObjectRow",
    "TaskRow",
    "UserRow",
    "make_engine",
    "make_sessionmaker",
    "utcnow",
]


def utcnow() -> dt.datetime:
    """Timezone-naive UTC now (stored as such in every DateTime column)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    """Declarative base of the segloop tables."""


class UserRow(Base):
    """An API user. Only the SHA-256 of the key is stored."""

    __tablename__ = "segloop_users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class JobRow(Base):
    """One uploaded volume and its interactive state."""

    __tablename__ = "segloop_jobs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(100), index=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    filename: Mapped[str] = mapped_column(String(255), default="")
    source_format: Mapped[str] = mapped_column(String(20))
    source_rel: Mapped[str] = mapped_column(String(255))
    modality: Mapped[str | None] = mapped_column(String(20), nullable=True)
    shape: Mapped[list[int]] = mapped_column(JSON)
    source_shape: Mapped[list[int]] = mapped_column(JSON)
    spacing: Mapped[list[float]] = mapped_column(JSON)
    orientation: Mapped[str] = mapped_column(String(8))
    engine: Mapped[str | None] = mapped_column(String(64), nullable=True)
    current_version: Mapped[int] = mapped_column(Integer, default=0)
    last_task: Mapped[str | None] = mapped_column(String(36), nullable=True)


class ObjectRow(Base):
    """A segmented object of a job: name, display colour and the label value in exported maps."""

    __tablename__ = "segloop_objects"
    __table_args__ = (UniqueConstraint("job_id", "object_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("segloop_jobs.id", ondelete="CASCADE"))
    object_id: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))
    colour: Mapped[str] = mapped_column(String(9))
    label_value: Mapped[int] = mapped_column(Integer)
    anchor_slice: Mapped[int | None] = mapped_column(Integer, nullable=True)


class TaskRow(Base):
    """One unit of engine work (initial-mask, propagate, refine) and its live progress."""

    __tablename__ = "segloop_tasks"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("segloop_jobs.id", ondelete="CASCADE"),
                                        index=True)
    kind: Mapped[str] = mapped_column(String(20))
    seq: Mapped[int] = mapped_column(Integer, default=0)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    owner: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    stage: Mapped[str] = mapped_column(String(40), default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    slices_done: Mapped[int] = mapped_column(Integer, default=0)
    slices_total: Mapped[int] = mapped_column(Integer, default=0)
    eta_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    started: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    finished: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    heartbeat: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)


class MaskVersionRow(Base):
    """One version of a job's label map (all objects). ``replay`` rebuilds the engine session."""

    __tablename__ = "segloop_mask_versions"
    __table_args__ = (UniqueConstraint("job_id", "number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("segloop_jobs.id", ondelete="CASCADE"),
                                        index=True)
    number: Mapped[int] = mapped_column(Integer)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    author: Mapped[str] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(100))
    engine: Mapped[str | None] = mapped_column(String(64), nullable=True)
    task_id: Mapped[str | None] = mapped_column(String(36), nullable=True, unique=True)
    path: Mapped[str] = mapped_column(String(255))
    parent: Mapped[int] = mapped_column(Integer, default=0)
    replay: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    reviewed: Mapped[bool] = mapped_column(Boolean, default=False)
    reviewed_by: Mapped[str | None] = mapped_column(String(100), nullable=True)


class AuditEntry(Base):
    """Who did what to which job, when (uploads, prompts, edits, reviews, deletions)."""

    __tablename__ = "segloop_audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    user: Mapped[str] = mapped_column(String(100), index=True)
    action: Mapped[str] = mapped_column(String(40))
    job_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class KeyValue(Base):
    """Small service-wide values (e.g. the model generation bumped by model reload)."""

    __tablename__ = "segloop_kv"
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


# Any fixed 64-bit number: the advisory lock that serialises table creation on PostgreSQL.
_DDL_LOCK_KEY = 0x5E6100


def make_engine(url: str) -> Engine:
    """A SQLAlchemy engine for ``url`` with the tables created. SQLite gets WAL + busy timeout."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    kwargs: dict[str, Any] = {"pool_pre_ping": not url.startswith("sqlite")}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _rec: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    _create_tables(engine)
    return engine


def _create_tables(engine: Engine, attempts: int = 5) -> None:
    """Create missing tables, tolerating other processes that create them at the same moment.

    API processes and workers sharing one database all start by creating the tables. Two
    ``create_all`` calls can both see a table missing and both issue ``CREATE TABLE``; the loser
    fails with "already exists" (SQLite) or a duplicate catalogue entry (PostgreSQL). PostgreSQL
    serialises the creation with a transaction-scoped advisory lock; every dialect retries, and
    the retry's existence check then finds the winner's tables.
    """
    for attempt in range(attempts):
        try:
            with engine.begin() as conn:
                if engine.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DDL_LOCK_KEY})
                Base.metadata.create_all(conn)
            return
        except (OperationalError, ProgrammingError, IntegrityError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def make_sessionmaker(engine: Engine) -> sessionmaker[Any]:
    """A session factory whose objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)
