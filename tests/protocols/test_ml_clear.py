"""MONAI Label's "new ROI" clear keeps the worker's engine session (no reopen), same result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from realdata import SHARED_DATA, need_shared_data
from segloop.config import load_settings
from segloop.jobs.events import LocalBus
from segloop.jobs.runner import Runtime
from segloop.jobs.store import LOCAL_ADMIN, JobStore
from segloop.protocols.ml_infer import clear_object

CT = SHARED_DATA / "totalseg" / "example_ct_sm.nii.gz"
BOX, BOX2, Z = [44, 27, 104, 81], [50, 33, 98, 75], 24


def test_clearing_an_object_keeps_the_cached_session(tmp_path: Path) -> None:
    need_shared_data()
    s = load_settings(None, home=tmp_path / "home", json_logs=False, default_engine="classic")
    s.ensure_dirs()
    up = s.tmp_dir / "upload-test"
    up.write_bytes(CT.read_bytes())
    store = JobStore(s)
    try:
        jid = store.create_job(up, "ct", LOCAL_ADMIN).job_id
        rt = Runtime(s, store, LocalBus(), "a")
        opened: list[str] = []
        real_open = rt._open

        def counting_open(*a: Any) -> Any:  # the real open, counted
            opened.append(a[0])
            return real_open(*a)

        rt._open = counting_open  # type: ignore[method-assign]

        def run(kind: str, **params: Any) -> np.ndarray:
            t = store.create_task(jid, kind, params, LOCAL_ADMIN, ["classic"])
            assert rt.run(t.task_id) == "done"
            return store.labels(jid, LOCAL_ADMIN)[0]

        run("initial-mask", slice_index=Z, box=BOX)
        first = run("propagate")
        assert first.any() and len(opened) == 1
        clear_object(store, LOCAL_ADMIN, jid, 1, 1)
        cleared, n = store.labels(jid, LOCAL_ADMIN)
        assert not cleared.any() and n == 3
        run("initial-mask", slice_index=Z, box=BOX2)
        second = run("propagate")
        assert second.any() and not np.array_equal(first, second)
        assert len(opened) == 1, "the clear made the worker open the engine session again"
        # a fresh worker (no cached session) replays the versions to the same mask
        fresh = Runtime(s, store, LocalBus(), "b")
        row = store.version_row(jid)
        sess = fresh.session_for(jid, None, "classic", row)
        assert np.array_equal(fresh.compose(sess, second.shape, {1: 1}), second)
        # nothing to clear: no new version
        clear_object(store, LOCAL_ADMIN, jid, 2, 2)
        assert store.labels(jid, LOCAL_ADMIN)[1] == 5
    finally:
        store.close()
