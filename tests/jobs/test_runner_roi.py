"""A task's ``roi``: the step may change the mask inside it only, live and on replay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from realdata import SHARED_DATA, need_shared_data
from segloop.config import Settings, load_settings
from segloop.errors import PromptError
from segloop.jobs.events import LocalBus
from segloop.jobs.runner import Runtime
from segloop.jobs.store import LOCAL_ADMIN, JobStore

CT = SHARED_DATA / "totalseg" / "example_ct_sm.nii.gz"


def _settings(tmp_path: Path) -> Settings:
    return load_settings(None, home=tmp_path / "home", json_logs=False, default_engine="classic")


def _upload(s: Settings) -> Path:
    s.ensure_dirs()
    p = s.tmp_dir / "upload-test"
    p.write_bytes(CT.read_bytes())
    return p


def test_roi_keeps_the_mask_outside_it(tmp_path: Path) -> None:
    need_shared_data()
    lab = np.asarray(nib.load(str(SHARED_DATA / "totalseg/example_seg.nii.gz")).dataobj) == 5
    z = int(np.argmax(lab.sum(axis=(0, 1))))
    xs, ys = np.nonzero(lab[:, :, z])
    box = [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
    s = _settings(tmp_path)
    store = JobStore(s)
    try:
        jid = store.create_job(_upload(s), "ct", LOCAL_ADMIN).job_id
        rt = Runtime(s, store, LocalBus(), "a")

        def run(kind: str, **params: Any) -> np.ndarray:
            t = store.create_task(jid, kind, params, LOCAL_ADMIN, ["classic"])
            assert rt.run(t.task_id) == "done"
            return store.labels(jid, LOCAL_ADMIN)[0]

        run("initial-mask", slice_index=z, box=box)
        full = run("propagate")
        assert len(np.flatnonzero(full.any(axis=(0, 1)))) > 8
        # a refine with a smaller box, limited to 5 slices around z
        small = [box[0] + 6, box[1] + 6, box[2] - 6, box[3] - 6]
        roi = [[0, full.shape[0] - 1], [0, full.shape[1] - 1], [z - 2, z + 2]]
        cut = run("refine", slice_index=z, box=small, roi=roi)
        inside = np.zeros(full.shape, bool)
        inside[:, :, z - 2:z + 3] = True
        assert np.array_equal(cut[~inside], full[~inside])  # outside: as before the step
        assert not np.array_equal(cut[inside], full[inside])  # inside: the refinement
        # the same refine without the roi changes slices outside it (the roi is not vacuous)
        store.move_current(jid, LOCAL_ADMIN, "undo")
        free = run("refine", slice_index=z, box=small)
        assert not np.array_equal(free[~inside], full[~inside])
        # a fresh worker replaying the roi step's version gets the same mask
        store.move_current(jid, LOCAL_ADMIN, "undo")
        row = store.version_row(jid, 3)
        assert row is not None and row.replay[-1]["roi"] == roi
        fresh = Runtime(s, store, LocalBus(), "b")
        sess = fresh.session_for(jid, None, "classic", row)
        assert np.array_equal(fresh.compose(sess, cut.shape, {1: 1}), cut)
        # a roi outside the volume is a clear prompt error
        with pytest.raises(PromptError, match="roi"):
            store.create_task(jid, "refine", {"slice_index": z, "box": small,
                                              "roi": [[0, 999], [0, 5], [0, 5]]},
                              LOCAL_ADMIN, ["classic"])
    finally:
        store.close()
