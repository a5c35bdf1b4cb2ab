"""Housekeeping of a segloop home: crash leftovers, the audit log's retention, SQLite VACUUM.

A process killed mid-write leaves temporary files behind: ``tmp/upload-*`` (an upload being
received), ``tmp/job-*`` (a job folder being built), ``tmp/ds-*`` (a datastore case being
written), ``tmp/result-*`` (an export being sent) and ``.tmp-*`` files of atomic writes beside
their target (``jobs/<id>/versions/.tmp-*``, the datastore manifest). :func:`sweep_leftovers`
deletes those whose newest modification is older than a grace period, so a write still in
progress in another process (another API server, a Celery worker) is never touched. It runs
when the API starts and on every ``POST /system/cleanup``.

Imports SQLAlchemy and the standard library only (never FastAPI or torch).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from segloop.config import Settings

from .db import AuditEntry, utcnow

__all__ = ["SweepReport", "prune_audit", "sweep_leftovers", "vacuum"]

log = logging.getLogger("segloop.jobs.housekeeping")

#: prefixes of in-flight entries directly under ``<home>/tmp``
TMP_PREFIXES: tuple[str, ...] = ("upload-", "job-", "ds-", "result-")
#: patterns (relative to ``<home>``) of atomic-write temporaries beside their targets
ATOMIC_TMP_GLOBS: tuple[str, ...] = ("jobs/*/.tmp-*", "jobs/*/*/.tmp-*", "jobs/*/*/*/.tmp-*",
                                     "datastore/.tmp-*", "datastore/cases/*/.tmp-*")


@dataclass
class SweepReport:
    """What a sweep removed (paths relative to the home) and how many it left as too recent."""

    removed: list[str] = field(default_factory=list)
    kept_recent: int = 0


def _newest_mtime(path: Path) -> float:
    """The newest modification time in ``path`` (a file, or a folder and everything in it)."""
    try:
        newest = path.lstat().st_mtime
    except OSError:
        return time.time()
    if path.is_dir() and not path.is_symlink():
        for root, dirs, names in os.walk(path):
            for n in (*dirs, *names):
                try:
                    newest = max(newest, os.lstat(os.path.join(root, n)).st_mtime)
                except OSError:
                    continue
    return newest


def _candidates(home: Path, tmp_dir: Path) -> list[Path]:
    out: list[Path] = []
    if tmp_dir.is_dir():
        out += [p for p in tmp_dir.iterdir() if p.name.startswith(TMP_PREFIXES)]
    for pattern in ATOMIC_TMP_GLOBS:
        out += list(home.glob(pattern))
    return out


def sweep_leftovers(settings: Settings, grace_seconds: float | None = None) -> SweepReport:
    """Delete crash leftovers under ``settings.home`` untouched for ``grace_seconds``
    (default ``settings.tmp_grace_seconds``)."""
    grace = settings.tmp_grace_seconds if grace_seconds is None else grace_seconds
    cutoff = time.time() - grace
    report = SweepReport()
    home = settings.home
    for path in _candidates(home, settings.tmp_dir):
        if _newest_mtime(path) > cutoff:
            report.kept_recent += 1
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cannot remove leftover %s: %s", path, exc)
            continue
        try:
            report.removed.append(path.relative_to(home).as_posix())
        except ValueError:
            report.removed.append(str(path))
    if report.removed:
        log.info("swept crash leftovers", extra={"removed": len(report.removed),
                                                 "kept_recent": report.kept_recent})
    return report


def prune_audit(engine: Engine, retention_days: int) -> int:
    """Delete audit entries older than ``retention_days`` (0 keeps everything); returns how many."""
    if retention_days <= 0:
        return 0
    cutoff = utcnow() - dt.timedelta(days=retention_days)
    with engine.begin() as conn:
        n = conn.execute(delete(AuditEntry).where(AuditEntry.ts < cutoff)).rowcount
    return int(n or 0)


def vacuum(engine: Engine) -> bool:
    """SQLite: VACUUM and truncate the WAL so deleted jobs give their space back; True when
    done. PostgreSQL relies on its autovacuum (False). A busy database is skipped (logged)."""
    if engine.dialect.name != "sqlite":
        return False
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM")
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    except OperationalError as exc:
        log.warning("VACUUM skipped: %s", exc)
        return False
    return True
