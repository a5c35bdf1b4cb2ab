"""The job store's typed records keep the public dict views the API and events carry."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

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
