"""A mask version stored on a base version (``expect_version``): a compare-and-set under the
job's lock. A write made on a version that is no longer current is refused (ConflictError,
409) and stores nothing; of two writers on the same base exactly one wins. On SQLite and on
the test PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pgschema import database
from realdata import SHARED_DATA, need_shared_data
from segloop.config import load_settings
from segloop.jobs.errors import ConflictError
from segloop.jobs.store import LOCAL_ADMIN, JobStore

CT = SHARED_DATA / "totalseg" / "example_ct_sm.nii.gz"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_job(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[JobStore, str]]:
    need_shared_data()
    with database(str(request.param), tmp_path) as url:
        s = load_settings(None, home=tmp_path / "home", json_logs=False,
                          default_engine="classic", database_url=url)
        s.ensure_dirs()
        upload = s.tmp_dir / "upload-test"
        upload.write_bytes(CT.read_bytes())
        store = JobStore(s)
        try:
            yield store, store.create_job(upload, "ct.nii.gz", LOCAL_ADMIN).job_id
        finally:
            store.close()


def _mask(store: JobStore, job_id: str, z: int) -> np.ndarray:
    """Object 1 on axial slice ``z`` (a block), the rest empty; canonical (X, Y, Z) uint8."""
    labels, _ = store.labels(job_id, LOCAL_ADMIN)
    labels[:] = 0
    labels[10:20, 10:20, z] = 1
    return labels


def test_an_edit_on_a_stale_base_is_refused_and_stores_nothing(
        store_job: tuple[JobStore, str]) -> None:
    store, job = store_job
    assert store.edit_mask(job, LOCAL_ADMIN, _mask(store, job, 3), expect_version=0) == 1
    assert store.edit_mask(job, LOCAL_ADMIN, _mask(store, job, 4), expect_version=1) == 2
    with pytest.raises(ConflictError) as err:
        store.edit_mask(job, LOCAL_ADMIN, _mask(store, job, 5), expect_version=1)
    assert "version 2 is current" in str(err.value)
    assert "made on version 1" in str(err.value)
    assert [v.version for v in store.list_versions(job, LOCAL_ADMIN)] == [1, 2]
    labels, n = store.labels(job, LOCAL_ADMIN)
    assert n == 2 and labels[15, 15, 4] == 1 and labels[15, 15, 5] == 0


def test_the_check_is_made_under_the_job_lock(store_job: tuple[JobStore, str]) -> None:
    """``add_version`` (which edit_mask ends in) checks the base itself, after locking the job:
    an early read in another transaction could be overtaken before the version is added."""
    store, job = store_job
    store.edit_mask(job, LOCAL_ADMIN, _mask(store, job, 3))
    with pytest.raises(ConflictError, match="version 1 is current"):
        store.add_version(job, _mask(store, job, 6), author="a", source="edit", replay=[],
                          expect_version=0)
    assert [v.version for v in store.list_versions(job, LOCAL_ADMIN)] == [1]
    assert store.add_version(job, _mask(store, job, 6), author="a", source="edit", replay=[],
                             expect_version=1) == 2


def test_without_a_base_a_version_is_stored_as_before(store_job: tuple[JobStore, str]) -> None:
    store, job = store_job
    store.edit_mask(job, LOCAL_ADMIN, _mask(store, job, 3), expect_version=0)
    assert store.edit_mask(job, LOCAL_ADMIN, _mask(store, job, 7)) == 2


def test_of_writers_racing_on_one_base_exactly_one_wins(
        store_job: tuple[JobStore, str]) -> None:
    store, job = store_job
    store.edit_mask(job, LOCAL_ADMIN, _mask(store, job, 3))
    writers = 4
    masks = [_mask(store, job, 10 + k) for k in range(writers)]
    start = threading.Barrier(writers)
    won: list[int] = []
    refused: list[str] = []

    def write(k: int) -> None:
        start.wait()
        try:
            won.append(store.edit_mask(job, LOCAL_ADMIN, masks[k], expect_version=1))
        except ConflictError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=write, args=(k,)) for k in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert won == [2], (won, refused)
    assert len(refused) == writers - 1
    assert all("version 2 is current" in m and "made on version 1" in m for m in refused)
    assert [v.version for v in store.list_versions(job, LOCAL_ADMIN)] == [1, 2]
    labels, n = store.labels(job, LOCAL_ADMIN)
    assert n == 2 and int((labels == 1).any(axis=(0, 1)).sum()) == 1  # one writer's slice
