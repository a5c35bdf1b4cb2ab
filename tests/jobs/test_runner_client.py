"""The runner runs each task on behalf of its owner: engine work sees the owner as the device
scheduler's client (:func:`segloop.engines.scheduler.current_client`), so sessions of one user
share one turn on a shared device."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from realdata import SHARED_DATA, need_shared_data
from segloop.config import load_settings
from segloop.engines import register_engine
from segloop.engines.classic import ClassicEngine, ClassicSession
from segloop.engines.scheduler import current_client
from segloop.jobs.events import LocalBus
from segloop.jobs.records import Principal
from segloop.jobs.runner import Runtime
from segloop.jobs.store import JobStore
from segloop.types import BoolArray, Prompts

SEEN: list[str | None] = []


class _WhoSession(ClassicSession):
    def segment_slice(self, z: int, prompts: Prompts, object_id: int = 1) -> BoolArray:
        SEEN.append(current_client())
        return super().segment_slice(z, prompts, object_id)


class _WhoEngine(ClassicEngine):
    name: ClassVar[str] = "who-classic"

    def open(self, volume: Any) -> _WhoSession:
        return _WhoSession(volume)


def test_a_task_runs_on_behalf_of_its_owner(tmp_path: Path) -> None:
    need_shared_data()
    register_engine("who-classic", _WhoEngine)
    s = load_settings(None, home=tmp_path / "home", json_logs=False, default_engine="classic")
    s.ensure_dirs()
    upload = s.tmp_dir / "upload-test"
    shutil.copy(SHARED_DATA / "totalseg" / "example_ct_sm.nii.gz", upload)
    store = JobStore(s)
    ana = Principal("ana", "admin")
    job = store.create_job(upload, "ct", ana)
    rt = Runtime(s, store, LocalBus(), "w1")
    t = store.create_task(job.job_id, "initial-mask", {"slice_index": 20, "box": [30, 30, 60, 60],
                                                       "engine": "who-classic"},
                          ana, ["who-classic"])
    SEEN.clear()
    rt.run(t.task_id)
    task = store.get_task(t.task_id)
    assert task is not None and task.state == "succeeded", task
    assert SEEN == ["ana"] and current_client() is None
    assert np.asarray(rt.cache.peek(job.job_id, "who-classic", rt._generation)[0].mask(1)).any()
    store.close()
