"""A version's durable write and its rows: the rows are written while the file is flushed to
disk (orderings, never times), and the commit still comes after the file and its folder are
flushed -- a committed version always has its file, and a failed write commits nothing."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from livertask import liver_slice_box
from realdata import SHARED_DATA, need_shared_data
from segloop import fsio
from segloop.config import load_settings
from segloop.jobs.events import LocalBus
from segloop.jobs.runner import Runtime
from segloop.jobs.store import LOCAL_ADMIN, JobStore

CT = SHARED_DATA / "totalseg" / "example_ct_sm.nii.gz"


def _store(tmp_path: Path) -> tuple[JobStore, str]:
    s = load_settings(None, home=tmp_path / "home", json_logs=False, default_engine="classic")
    s.ensure_dirs()
    upload = s.tmp_dir / "upload-test"
    upload.write_bytes(CT.read_bytes())
    store = JobStore(s)
    return store, store.create_job(upload, "ct.nii.gz", LOCAL_ADMIN).job_id


def test_the_rows_are_written_while_the_file_is_flushed(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    need_shared_data()
    store, job_id = _store(tmp_path)
    rt = Runtime(store.settings, store, LocalBus(), "w1")
    rows_written = threading.Event()
    flushed: list[str] = []
    order: list[str] = []
    overlapped: list[bool] = []
    real_file, real_dir = fsio.fsync_file, fsio.fsync_dir

    def fsync_file(path: Any) -> None:
        if "versions" in str(path):  # the task's succeed is sent during this wait, or never
            overlapped.append(rows_written.wait(10))
        real_file(path)
        flushed.append("file")

    def fsync_dir(path: Any) -> None:
        real_dir(path)
        if str(path).endswith("versions"):
            flushed.append("dir")

    def statement(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        if sql.startswith("UPDATE segloop_tasks") and "finished=" in sql:  # the succeed
            rows_written.set()

    def commit(conn: Any) -> None:
        order.append(f"commit after {'+'.join(flushed) or 'nothing'}")

    z, box = liver_slice_box()
    t = store.create_task(job_id, "initial-mask", {"slice_index": z, "box": box},
                          LOCAL_ADMIN, ["classic"])
    monkeypatch.setattr(fsio, "fsync_file", fsync_file)
    monkeypatch.setattr(fsio, "fsync_dir", fsync_dir)
    event.listen(store.engine, "before_cursor_execute", statement)
    event.listen(store.engine, "commit", commit)
    try:
        assert rt.run(t.task_id) == "done"
    finally:
        event.remove(store.engine, "before_cursor_execute", statement)
        event.remove(store.engine, "commit", commit)
        rt.close()
    try:
        assert overlapped == [True], "the version's rows waited for its file's fsync"
        assert "commit after file+dir" in order, order  # the version's own transaction
        assert not any(o == "commit after nothing" and i > 0 for i, o in enumerate(order))
        row = store.get_task(t.task_id)
        assert row is not None and row.state == "succeeded" and row.version == 1
        assert (store.job_dir(job_id) / "versions" / "v0001.npz").is_file()
    finally:
        store.close()


def test_a_failed_write_commits_no_version(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    need_shared_data()
    store, job_id = _store(tmp_path)
    rt = Runtime(store.settings, store, LocalBus(), "w1")

    def full(path: Any) -> None:
        raise OSError(28, "No space left on device")

    z, box = liver_slice_box()
    t = store.create_task(job_id, "initial-mask", {"slice_index": z, "box": box},
                          LOCAL_ADMIN, ["classic"])
    monkeypatch.setattr(fsio, "fsync_file", full)
    try:
        assert rt.run(t.task_id) == "done"
        row = store.get_task(t.task_id)
        assert row is not None and row.state == "failed" and "No space" in str(row.error)
        assert store.version_row(job_id) is None and store.get_job(
            job_id, LOCAL_ADMIN).current_version == 0
        assert not (store.job_dir(job_id) / "versions" / "v0001.npz").exists()
    finally:
        rt.close()
        store.close()
