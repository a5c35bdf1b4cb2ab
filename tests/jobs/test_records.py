"""The job store's typed records keep the public views the API and events carry."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from segloop.jobs.records import JobRecord, ObjectRecord, VersionRecord
from segloop.jobs.states import TaskKind, TaskState
from segloop.jobs.store import TaskRecord, task_dict


def _row(**over: object) -> SimpleNamespace:
    base: dict[str, object] = dict(
        id="t1", job_id="j1", kind="propagate", state="running", stage="propagating",
        progress=0.123456, slices_done=3, slices_total=9, eta_seconds=1.5, error=None,
        attempts=1, version=None, params={"object_id": 1}, created=dt.datetime(2026, 1, 2, 3, 4, 5),
        finished=None)
    base.update(over)
    return SimpleNamespace(**base)


def test_task_dict_is_the_task_record() -> None:
    d = task_dict(_row())
    assert list(d) == ["task_id", "job_id", "kind", "state", "stage", "progress", "slices_done",
                       "slices_total", "eta_seconds", "error", "attempts", "version", "params",
                       "created", "finished"]
    assert d["progress"] == 0.1235 and d["created"] == "2026-01-02T03:04:05Z"
    assert d["finished"] is None and d["params"] == {"object_id": 1}
    assert TaskRecord.from_row(_row()).as_dict() == d


def test_a_finished_task_has_its_time() -> None:
    d = task_dict(_row(state="succeeded", finished=dt.datetime(2026, 1, 2, 3, 5)))
    assert d["finished"] == "2026-01-02T03:05:00Z"


def test_job_version_and_object_records_keep_their_public_keys() -> None:
    created = dt.datetime(2026, 1, 2, 3, 4, 5)
    job = SimpleNamespace(
        id="j1", owner="ann", filename="ct.nii.gz", created=created, updated=created,
        source_format="nifti", modality="CT", shape=[4, 5, 6], source_shape=[6, 5, 4],
        spacing=[1, 1.5, 2], orientation="LPS", engine=None, current_version=2, last_task="t1")
    j = JobRecord.from_row(job).as_dict()  # type: ignore[arg-type]
    assert list(j) == ["job_id", "owner", "filename", "created", "updated", "source_format",
                       "modality", "shape", "source_shape", "spacing", "orientation", "image2d",
                       "engine", "current_version", "last_task"]
    assert j["created"] == "2026-01-02T03:04:05Z" and j["spacing"] == [1.0, 1.5, 2.0]
    v = SimpleNamespace(number=2, created=created, author="ann", source="edit", engine=None,
                        task_id=None, parent=1, reviewed=False, reviewed_by=None)
    assert VersionRecord.from_row(v, 2).current  # type: ignore[arg-type]
    assert not VersionRecord.from_row(v, 3).current  # type: ignore[arg-type]
    o = SimpleNamespace(object_id=1, name="liver", colour="#ff4040", label_value=5,
                        anchor_slice=None)
    assert ObjectRecord.from_row(o).as_dict() == {  # type: ignore[arg-type]
        "object_id": 1, "name": "liver", "colour": "#ff4040", "label_value": 5,
        "anchor_slice": None, "anchor_axis": "axial"}


def test_records_are_frozen_and_typed() -> None:
    t = TaskRecord.from_row(_row())
    assert t.kind is TaskKind.PROPAGATE and t.state is TaskState.RUNNING
    with pytest.raises(ValidationError):
        t.state = TaskState.FAILED  # type: ignore[misc]
    with pytest.raises(ValidationError):  # a state the store never writes is refused
        TaskRecord.from_row(_row(state="paused"))
