"""Every engine family works on a plane's view of a real CT (the transposed volume with
permuted spacing): a coronal prompt segments that coronal slice only, propagation runs along y,
and the job's plane sessions give what the engine gives on the transposed volume by hand.
Engines needing weights get tiny random ones (tests/engines/provision.py): their masks are not
meaningful, the geometry is. One engine per family (the other SAM 2 sizes and MedSAM2 share
sam2.1-tiny's session code)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from engines.provision import PROVISIONERS
from realdata import SHARED_DATA, need_shared_data
from segloop.engines import engine_class
from segloop.engines.base import drive
from segloop.io import load_volume
from segloop.jobs.planesessions import PlaneSessions, view_volume
from segloop.types import Plane, Prompts

CT = SHARED_DATA / "totalseg" / "example_ct_sm.nii.gz"


@pytest.mark.parametrize("name", ["classic", "medsam", "sam2.1-tiny", "sammed3d"])
def test_every_engine_runs_on_a_coronal_view(name: str) -> None:
    need_shared_data()
    cls = engine_class(name)
    if cls.unavailable_reason() is not None:
        prov = PROVISIONERS.get(name)
        assert prov is not None, f"{name}: no test provisioner"
        prov(Path(os.environ["SEGLOOP_HOME"]))
        assert cls.unavailable_reason() is None
    engine = cls()
    vol = load_volume(CT).canonical()
    plane = Plane.CORONAL
    y = vol.shape[1] // 2
    box = [30, 5, 90, 25]  # [x0, z0, x1, z1] on coronal slice y
    opened: list[Plane] = []

    def open_view(p: Plane) -> object:
        opened.append(p)
        return engine.open(view_volume(vol, p))

    job = PlaneSessions(open_view, vol.shape)  # type: ignore[arg-type]
    view = job.view(plane)
    m2d = view.segment_slice(y, Prompts.make(box), 1)
    job.changed(plane, [1])
    assert m2d.shape == (vol.shape[0], vol.shape[2])
    first = np.array(job.mask(1))
    assert first.shape == vol.shape and not np.delete(first, y, axis=1).any()
    assert np.array_equal(first[:, y, :], m2d)
    drive(view.propagate(y, None, 1), None, None)
    job.changed(plane, [1])
    assert opened == [plane]  # a coronal-only job opens no axial session

    by_hand = engine.open(view_volume(vol, plane))
    by_hand.segment_slice(y, Prompts.make(box), 1)
    drive(by_hand.propagate(y, None, 1), None, None)
    assert np.array_equal(job.mask(1), plane.from_view(np.asarray(by_hand.mask(1), bool)))
