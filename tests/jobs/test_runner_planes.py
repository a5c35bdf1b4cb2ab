"""Prompts drawn on coronal and sagittal slices: the runner runs them in a session on the
plane's view of the volume, propagates along the plane's slice axis, and replays them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from realdata import SHARED_DATA, need_shared_data
from segloop.config import Settings, load_settings
from segloop.engines import get_engine
from segloop.engines.base import drive
from segloop.errors import PromptError
from segloop.jobs import files
from segloop.jobs.events import LocalBus
from segloop.jobs.planesessions import view_volume
from segloop.jobs.runner import Runtime
from segloop.jobs.store import LOCAL_ADMIN, JobStore
from segloop.types import Plane, Prompts

CT = SHARED_DATA / "totalseg" / "example_ct_sm.nii.gz"


def _settings(tmp_path: Path) -> Settings:
    return load_settings(None, home=tmp_path / "home", json_logs=False, default_engine="classic")


def _upload(s: Settings) -> Path:
    s.ensure_dirs()
    p = s.tmp_dir / "upload-test"
    p.write_bytes(CT.read_bytes())
    return p


def _liver() -> np.ndarray:
    return np.asarray(nib.load(str(SHARED_DATA / "totalseg/example_seg.nii.gz")).dataobj) == 5


def _box(plane: Plane, lab: np.ndarray) -> tuple[int, list[int]]:
    """The slice of ``plane`` with the most liver, and the liver's box on it (plane coords)."""
    view = plane.to_view(lab)
    k = int(np.argmax(view.sum(axis=(0, 1))))
    us, vs = np.nonzero(view[:, :, k])
    return k, [int(us.min()), int(vs.min()), int(us.max()), int(vs.max())]


@pytest.mark.parametrize("plane", [Plane.CORONAL, Plane.SAGITTAL])
def test_a_prompt_on_a_plane_propagates_along_its_axis(tmp_path: Path, plane: Plane) -> None:
    need_shared_data()
    k, box = _box(plane, _liver())
    s = _settings(tmp_path)
    store = JobStore(s)
    try:
        jid = store.create_job(_upload(s), "ct", LOCAL_ADMIN).job_id
        rt = Runtime(s, store, LocalBus(), "a")

        def run(kind: str, **params: Any) -> np.ndarray:
            t = store.create_task(jid, kind, params, LOCAL_ADMIN, ["classic"])
            assert rt.run(t.task_id) == "done"
            assert store.get_task(t.task_id).state == "succeeded"  # type: ignore[union-attr]
            return store.labels(jid, LOCAL_ADMIN)[0]

        first = run("initial-mask", slice_index=k, box=box, axis=plane.value)
        view = plane.to_view(first)
        assert view[:, :, k].sum() > 50  # the 2D mask lands on that slice of that plane
        assert not np.delete(view, k, axis=2).any()  # and on no other
        # propagate without slice_index or axis: from the anchor, along the prompt's axis
        full = run("propagate")
        spans = np.flatnonzero(plane.to_view(full).any(axis=(0, 1)))
        assert len(spans) > 8
        # the same engine run by hand on the transposed volume gives the same mask
        can = files.load_canonical(store.job_dir(jid), "CT")
        sess = get_engine("classic").open(view_volume(can, plane))
        sess.segment_slice(k, Prompts.make(box), 1)
        drive(sess.propagate(k, None, 1), None, None)
        assert np.array_equal(plane.from_view(sess.mask(1)), full == 1)
        # the propagation range acts along the plane's axis
        lo, hi = int(spans[0]) + 2, k + 1
        cut = run("propagate", slice_index=k, axis=plane.value, first_slice=lo, last_slice=hi)
        assert set(np.flatnonzero(plane.to_view(cut).any(axis=(0, 1)))) <= set(range(lo, hi + 1))
        # undo, then a worker that never saw the job rebuilds the version from its steps
        assert store.move_current(jid, LOCAL_ADMIN, "undo") == 2
        row = store.version_row(jid, 2)
        assert row is not None and row.replay[-1]["axis"] == plane.value
        fresh = Runtime(s, store, LocalBus(), "b")
        again = fresh.compose(fresh.session_for(jid, "CT", "classic", row), full.shape, {1: 1})
        assert np.array_equal(again, full)
        # an axial object 2 beside it leaves object 1 as the plane's session made it
        z = int(np.argmax(_liver().sum(axis=(0, 1))))
        xs, ys = np.nonzero(_liver()[:, :, z])
        both = run("initial-mask", slice_index=z, object_id=2,
                   box=[int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())])
        assert ((both == 2) | ((both == 1) == (full == 1))).all()
    finally:
        store.close()


def test_an_axial_correction_of_a_coronal_object_starts_from_its_mask(tmp_path: Path) -> None:
    """Sessions of two planes stay in step: the axial session sees the coronal result."""
    need_shared_data()
    lab = _liver()
    k, box = _box(Plane.CORONAL, lab)
    s = _settings(tmp_path)
    store = JobStore(s)
    try:
        jid = store.create_job(_upload(s), "ct", LOCAL_ADMIN).job_id
        rt = Runtime(s, store, LocalBus(), "a")
        for kind, params in (("initial-mask", {"slice_index": k, "box": box, "axis": "coronal"}),
                             ("propagate", {})):
            t = store.create_task(jid, kind, params, LOCAL_ADMIN, ["classic"])
            assert rt.run(t.task_id) == "done"
        coronal = store.labels(jid, LOCAL_ADMIN)[0] == 1
        z = int(np.argmax(coronal.sum(axis=(0, 1))))
        xs, ys = np.nonzero(coronal[:, :, z])
        t = store.create_task(jid, "initial-mask", {"slice_index": z, "box": [
            int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]}, LOCAL_ADMIN,
            ["classic"])
        assert rt.run(t.task_id) == "done"
        after = store.labels(jid, LOCAL_ADMIN)[0] == 1
        other = np.ones(after.shape[2], bool)
        other[z] = False
        # the slices the axial step did not touch keep the coronal propagation's mask
        assert np.array_equal(after[:, :, other], coronal[:, :, other])
        assert after[:, :, z].any()
    finally:
        store.close()


def test_the_axis_is_checked(tmp_path: Path) -> None:
    need_shared_data()
    s = _settings(tmp_path)
    store = JobStore(s)
    try:
        job = store.create_job(_upload(s), "ct", LOCAL_ADMIN)
        nx, ny, nz = job.shape

        def submit(kind: str, **params: Any) -> None:
            store.create_task(job.job_id, kind, params, LOCAL_ADMIN, ["classic"])

        with pytest.raises(PromptError, match="axis must be one of axial, coronal, sagittal"):
            submit("initial-mask", slice_index=1, box=[1, 1, 5, 5], axis="oblique")
        with pytest.raises(PromptError, match=f"coronal slices 0..{ny - 1}"):
            submit("initial-mask", slice_index=ny, box=[1, 1, 5, 5], axis="coronal")
        # on a sagittal slice the box is (y, z): z past the volume is refused by name
        with pytest.raises(PromptError, match=f"z in 0..{nz - 1}"):
            submit("initial-mask", slice_index=1, box=[1, 1, 5, nz + 3], axis="sagittal")
        submit("initial-mask", slice_index=nx - 1, box=[1, 1, 5, nz - 1], axis="sagittal")
        with pytest.raises(PromptError, match="drawn on a sagittal slice"):
            submit("propagate", axis="coronal")
        # propagate without axis or slice follows the plane of the object's anchor
        t = store.create_task(job.job_id, "propagate", {}, LOCAL_ADMIN, ["classic"])
        assert t.params["axis"] == "sagittal" and t.params["slice_index"] == nx - 1
        # an object whose anchor was set by a refine (no initial mask): that refine's plane
        submit("refine", slice_index=3, box=[1, 1, 5, 5], axis="coronal", object_id=2)
        t = store.create_task(job.job_id, "propagate", {"object_id": 2}, LOCAL_ADMIN,
                              ["classic"])
        assert t.params["axis"] == "coronal" and t.params["slice_index"] == 3
    finally:
        store.close()
