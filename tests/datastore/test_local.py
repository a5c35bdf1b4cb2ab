"""The datastore's writes: every concurrent add keeps its rows (threads and processes), adding a
case twice writes it once, a case folder whose rows were lost is repaired."""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segloop.datastore.local import (
    MANIFEST_COLUMNS,
    Datastore,
    ReviewedCase,
    ReviewedObject,
)
from segloop.datastore.manifest import read_manifest
from segloop.errors import InputError


def _image(tmp: Path) -> Path:
    path = tmp / "canonical.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4), np.int16), np.diag([2.0, 2.0, 3.0, 1.0])),
             str(path))
    return path


def _case(image: Path, job_id: str, version: int = 1) -> ReviewedCase:
    labels = np.zeros((6, 5, 4), np.uint8)
    labels[1:3, 1:3, 1] = 1
    labels[4, 4, 2] = 2
    objects = (ReviewedObject(1, 1, "liver"), ReviewedObject(2, 2, "spleen"),
               ReviewedObject(3, 3, "absent"))
    return ReviewedCase(job_id=job_id, version=version, reviewed_by="rita", modality="CT",
                        image=image, labels=labels, objects=objects)


def _add_in_child(root: str, image: str, job_id: str) -> int:
    return Datastore(Path(root)).add(_case(Path(image), job_id)).rows_added


def test_add_writes_case_rows_and_readable_manifest(tmp_path: Path) -> None:
    ds = Datastore(tmp_path / "ds")
    with pytest.raises(InputError, match="no reviewed masks"):
        ds.require_manifest()
    out = ds.add(_case(_image(tmp_path), "job-a"))
    assert (out.rows_added, out.existed, out.case_dir) == (2, False, "cases/job-a_v0001")
    case = tmp_path / "ds" / out.case_dir
    assert sorted(p.name for p in case.iterdir()) == ["image.nii.gz", "label.nii.gz", "meta.json"]
    lab = nib.load(str(case / "label.nii.gz"))
    assert np.allclose(lab.affine, np.diag([2.0, 2.0, 3.0, 1.0]))  # type: ignore[attr-defined]
    cases = read_manifest(ds.require_manifest())
    assert [(c.case_id, c.label_value, c.structure) for c in cases] == [
        ("job-a_v0001_o1", 1, "liver"), ("job-a_v0001_o2", 2, "spleen")]
    assert list(ds.rows()[0]) == list(MANIFEST_COLUMNS)
    assert not list((tmp_path / "ds" / ".tmp").iterdir())


def test_adding_twice_is_idempotent_and_lost_rows_are_repaired(tmp_path: Path) -> None:
    ds = Datastore(tmp_path / "ds")
    image = _image(tmp_path)
    ds.add(_case(image, "job-a"))
    again = ds.add(_case(image, "job-a"))
    assert (again.rows_added, again.existed) == (0, True)
    assert len(ds.rows()) == 2
    ds.manifest_path.write_text(",".join(MANIFEST_COLUMNS) + "\n")  # as if a crash lost them
    assert ds.add(_case(image, "job-a")).rows_added == 2
    assert len(ds.rows()) == 2


def test_concurrent_adds_from_threads_keep_every_row(tmp_path: Path) -> None:
    ds = Datastore(tmp_path / "ds")
    image = _image(tmp_path)
    jobs = [f"job-{i:02d}" for i in range(32)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda j: ds.add(_case(image, j)), jobs))
    rows = ds.rows()
    assert len(rows) == 64
    assert {r["job_id"] for r in rows} == set(jobs)


def test_concurrent_adds_from_processes_keep_every_row(tmp_path: Path) -> None:
    root, image = tmp_path / "ds", _image(tmp_path)
    jobs = [uuid.uuid4().hex for _ in range(24)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(6) as pool:
        added = pool.starmap(_add_in_child, [(str(root), str(image), j) for j in jobs])
    assert added == [2] * len(jobs)
    assert len(Datastore(root).rows()) == 2 * len(jobs)


def test_sweep_removes_only_old_half_built_cases(tmp_path: Path) -> None:
    ds = Datastore(tmp_path / "ds")
    old = tmp_path / "ds" / ".tmp" / "job-x_v0001-deadbeef"
    young = tmp_path / "ds" / ".tmp" / "job-y_v0001-cafebabe"
    old.mkdir(parents=True)
    young.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    ds.add(_case(_image(tmp_path), "job-a"))  # every add sweeps first
    assert not old.exists() and young.exists()  # a build in flight elsewhere is left alone
    assert ds.sweep(older_than=0) == 1
