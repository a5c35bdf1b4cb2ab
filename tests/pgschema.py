"""A job-store database for a test: a SQLite file, or a fresh schema on the test PostgreSQL.

Shared by tests/reliability (servers and workers on one store) and tests/jobs (processes
racing to create the tables).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["database"]


@contextlib.contextmanager
def database(kind: str, tmp_path: Path) -> Iterator[str]:
    """A job-store URL: a SQLite file, or a fresh schema on the PostgreSQL of
    ``SEGLOOP_TEST_PG_URL`` (default postgresql://localhost/test). PostgreSQL unreachable:
    the test fails when SEGLOOP_TEST_PG_URL is set (CI), else it is skipped."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    import sqlalchemy as sa

    pg = os.environ.get("SEGLOOP_TEST_PG_URL", "postgresql://localhost/test")
    eng = sa.create_engine(pg.replace("postgresql://", "postgresql+psycopg2://"))
    schema = f"segloop_rel_{uuid.uuid4().hex[:10]}"
    try:
        with eng.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    except sa.exc.OperationalError as exc:
        if "SEGLOOP_TEST_PG_URL" in os.environ:
            raise
        pytest.skip(f"PostgreSQL at {pg} is unreachable: {exc.orig}")
    sep = "&" if "?" in pg else "?"
    try:
        yield f"{pg}{sep}options=-csearch_path%3D{schema}"
    finally:
        with eng.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        eng.dispose()
