"""MONAI Label's "new ROI" is ONE ``segment`` task: clear + key slice + propagation in the
worker's cached engine session (no reopen), one version, undone as a whole, replayed by a
fresh worker to the identical mask."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from realdata import SHARED_DATA, need_shared_data
from segloop.config import load_settings
from segloop.errors import PromptError
from segloop.jobs.events import LocalBus
from segloop.jobs.runner import Runtime
from segloop.jobs.store import LOCAL_ADMIN, JobStore

CT = SHARED_DATA / "totalseg" / "example_ct_sm.nii.gz"
BOX, BOX2, Z = [44, 27, 104, 81], [50, 33, 98, 75], 24


def test_new_roi_is_one_step_in_the_cached_session(tmp_path: Path) -> None:
    need_shared_data()
    s = load_settings(None, home=tmp_path / "home", json_logs=False, default_engine="classic")
    s.ensure_dirs()
    store = JobStore(s)
    try:
        jobs = []
        for name in ("ct", "fresh"):
            up = s.tmp_dir / f"upload-{name}"
            up.write_bytes(CT.read_bytes())
            jobs.append(store.create_job(up, name, LOCAL_ADMIN).job_id)
        jid, other = jobs
        rt = Runtime(s, store, LocalBus(), "a")
        opened: list[str] = []
        real_open = rt._open

        def counting_open(*a: Any) -> Any:  # the real open, counted
            opened.append(a[0])
            return real_open(*a)

        rt._open = counting_open  # type: ignore[method-assign]

        def run(job: str, kind: str, **params: Any) -> np.ndarray:
            t = store.create_task(job, kind, params, LOCAL_ADMIN, ["classic"])
            assert rt.run(t.task_id) == "done"
            rec = store.task_for(job, t.task_id, LOCAL_ADMIN)
            assert rec.state == "succeeded", rec.error
            return store.labels(job, LOCAL_ADMIN)[0]

        run(jid, "initial-mask", slice_index=Z, box=BOX)
        first = run(jid, "propagate")
        assert first.any() and len(opened) == 1 and store.labels(jid, LOCAL_ADMIN)[1] == 2
        second = run(jid, "segment", slice_index=Z, box=BOX2, clear=True)
        assert store.labels(jid, LOCAL_ADMIN)[1] == 3, "a new ROI must be one version"
        assert second.any() and not np.array_equal(first, second)
        assert len(second.nonzero()[2]) and len(np.unique(second.nonzero()[2])) > 5
        assert opened.count(jid) == 1, "the new ROI made the worker open the engine session again"
        # the same as segmenting BOX2 on an untouched job: nothing of the old mask is left
        run(other, "initial-mask", slice_index=Z, box=BOX2)
        assert np.array_equal(run(other, "propagate"), second)
        # a fresh worker (no cached session) replays the versions to the same mask
        fresh = Runtime(s, store, LocalBus(), "b")
        sess = fresh.session_for(jid, None, "classic", store.version_row(jid))
        assert np.array_equal(fresh.compose(sess, second.shape, {1: 1}), second)
        # one undo takes the whole step back
        store.move_current(jid, LOCAL_ADMIN, "undo")
        assert np.array_equal(store.labels(jid, LOCAL_ADMIN)[0], first)
        store.move_current(jid, LOCAL_ADMIN, "redo")
        # with a ROI: the whole object is cleared, the new one stays inside the ROI
        roi = [[60, 90], [40, 70], [Z - 3, Z + 3]]
        third = run(jid, "segment", slice_index=Z, box=[60, 40, 90, 70], clear=True, roi=roi)
        zs = np.unique(third.nonzero()[2])
        assert third.any() and zs.min() >= Z - 3 and zs.max() <= Z + 3
        xs, ys = third.nonzero()[0], third.nonzero()[1]
        assert xs.min() >= 60 and xs.max() <= 90 and ys.min() >= 40 and ys.max() <= 70
        assert opened.count(jid) == 1
        # a 2D step (no propagation) on another object, with a refinement elsewhere refused
        flat = run(jid, "segment", slice_index=Z, box=BOX, object_id=2, propagate=False)
        assert np.unique((flat == 2).nonzero()[2]).tolist() == [Z]
        with pytest.raises(PromptError):
            store.create_task(jid, "segment", {"slice_index": Z, "box": BOX,
                                               "refine": [{"slice_index": 999,
                                                           "points": [[50, 50]]}]},
                              LOCAL_ADMIN, ["classic"])
        with pytest.raises(PromptError, match="clear"):
            store.create_task(jid, "segment", {"slice_index": Z, "box": BOX, "clear": "yes"},
                              LOCAL_ADMIN, ["classic"])
    finally:
        store.close()
