"""Table creation when several processes open one fresh database at the same moment.

API processes and workers all call ``make_engine`` at start-up; on a fresh database they race
to create the tables. CI once lost that race (SQLite: "table segloop_jobs already exists") and
a ``segloop serve`` exited. Here processes are released together by a barrier, round after
round, each round on a fresh database, and every one of them must come up.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
import sqlalchemy as sa

from pgschema import database
from segloop.jobs.db import make_engine

PROCESSES = 6
ROUNDS = 5


def _open_together(barrier: Barrier, urls: list[str], errors: mp.Queue[str]) -> None:
    for url in urls:
        barrier.wait(timeout=60)
        try:
            make_engine(url).dispose()
        except Exception as exc:  # reported to the parent, which fails the test
            errors.put(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")


def _race(urls: list[str]) -> list[str]:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    errors: mp.Queue[str] = ctx.Queue()
    procs = [ctx.Process(target=_open_together, args=(barrier, urls, errors))
             for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0, f"a process exited with {p.exitcode}"
    found = []
    while not errors.empty():
        found.append(errors.get())
    return found


def _tables(url: str) -> set[str]:
    eng = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    try:
        return set(sa.inspect(eng).get_table_names())
    finally:
        eng.dispose()


EXPECTED = {"segloop_jobs", "segloop_tasks", "segloop_users", "segloop_audit", "segloop_kv"}


def test_processes_creating_sqlite_tables_together_all_start(tmp_path: Path) -> None:
    urls = [f"sqlite:///{tmp_path / f'jobs{i}.db'}" for i in range(ROUNDS)]
    assert _race(urls) == []
    for url in urls:
        assert _tables(url) >= EXPECTED


@pytest.fixture
def pg_schemas(tmp_path: Path) -> Iterator[list[str]]:
    """ROUNDS fresh schemas on the test PostgreSQL (tests/pgschema.py: unreachable fails where
    SEGLOOP_TEST_PG_URL is set, as in CI, and skips elsewhere)."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(database("postgresql", tmp_path)) for _ in range(ROUNDS)]


def test_processes_creating_postgresql_tables_together_all_start(pg_schemas: list[str]) -> None:
    assert _race(pg_schemas) == []
    for url in pg_schemas:
        assert _tables(url) >= EXPECTED


def _set_together(url: str, home: Path, barrier: Barrier, keys: list[str],
                  errors: mp.Queue[str], value: str) -> None:
    from segloop.config import Settings
    from segloop.jobs.store import JobStore

    store = JobStore(Settings(home=home, database_url=url))
    for key in keys:
        barrier.wait(timeout=60)
        try:
            store.set_kv(key, value)
        except Exception as exc:  # reported to the parent, which fails the test
            errors.put(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")


def test_processes_setting_a_new_service_value_together_all_succeed(
        pg_schemas: list[str], tmp_path: Path) -> None:
    """Two model reloads at once both set the new generation; neither gets a 500."""
    url = pg_schemas[0]
    make_engine(url).dispose()
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    errors: mp.Queue[str] = ctx.Queue()
    keys = [f"k{i}" for i in range(30)]
    procs = [ctx.Process(target=_set_together,
                         args=(url, tmp_path / f"home{i}", barrier, keys, errors, str(i)))
             for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == []
