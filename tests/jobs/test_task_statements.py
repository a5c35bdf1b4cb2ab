"""SQL statements per task: what the job store sends for one 2D prompt (counts, not times).

Each statement is a round trip to PostgreSQL and a few hundred microseconds of CPU on any
database, paid by every task; these counts keep them from creeping back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from livertask import liver_slice_box
from pgschema import database
from realdata import SHARED_DATA, need_shared_data
from segloop.config import load_settings
from segloop.jobs.events import LocalBus
from segloop.jobs.runner import Runtime
from segloop.jobs.store import LOCAL_ADMIN, JobStore

CT = SHARED_DATA / "totalseg" / "example_ct_sm.nii.gz"


@contextmanager
def _statements(store: JobStore) -> Iterator[list[str]]:
    seen: list[str] = []

    def hook(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(" ".join(statement.split()[:3]))

    event.listen(store.engine, "before_cursor_execute", hook)
    try:
        yield seen
    finally:
        event.remove(store.engine, "before_cursor_execute", hook)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_2d_prompt_costs_eight_statements_to_run(tmp_path: Path, kind: str) -> None:
    """Claim (read, claim returning the row, versions, labels) and completion (lock the job
    returning its numbers, insert the version, make it current, succeed returning the row):
    no statement re-reads what the one before it wrote. The same on both databases."""
    need_shared_data()
    with database(kind, tmp_path) as url:
        _count(tmp_path, url)


def _count(tmp_path: Path, url: str) -> None:
    s = load_settings(None, home=tmp_path / "home", json_logs=False, default_engine="classic",
                      database_url=url)
    s.ensure_dirs()
    upload = s.tmp_dir / "upload-test"
    upload.write_bytes(CT.read_bytes())
    store = JobStore(s)
    job = store.create_job(upload, "ct.nii.gz", LOCAL_ADMIN)
    rt = Runtime(s, store, LocalBus(), "w1")
    z, box = liver_slice_box()
    try:
        for i in range(3):  # the first opens the session; later ones have a parent version
            with _statements(store) as submit:
                t = store.create_task(job.job_id, "initial-mask", {"slice_index": z, "box": box},
                                      LOCAL_ADMIN, ["classic"])
            with _statements(store) as run:
                assert rt.run(t.task_id) == "done"
            assert store.get_task(t.task_id).version == i + 1
        assert len(submit) == 4, submit  # lock the job, read it, insert task and audit entry
        assert len(run) == 8, run
        assert sum(q.startswith("SELECT segloop_tasks.id") for q in run) == 1, run  # the claim's
    finally:
        rt.close()
        store.close()
