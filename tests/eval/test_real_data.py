"""``segloop eval`` on two real cases of ../shared/data (skipped when the folder is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segloop.datastore.manifest import read_manifest
from segloop.engines.registry import engine_names
from segloop.eval.runner import evaluate, resolve_engines
from segloop.io import load_volume

pytestmark = pytest.mark.shared_data


def test_dicom_case_with_flipped_label_and_an_mr_case(shared_data: Path) -> None:
    if "classic" not in engine_names():
        pytest.skip("the classic engine is not registered")
    wanted = ("ct_dicom_spleen", "mr_breast_lesion")
    cases = [c for c in read_manifest(shared_data / "cases.csv", shared_data) if c.case_id in wanted]
    assert [c.case_id for c in cases] == list(wanted)
    result = evaluate(cases, resolve_engines(["classic"]), clicks=1)
    for case in cases:
        recs = [r for r in result.records if r.case_id == case.case_id]
        assert [r.click for r in recs] == [0, 1]
        # the truth is the label's target moved onto the image grid: no voxel lost or gained
        lab = np.asarray(load_volume(case.label).data)
        assert recs[0].truth_voxels == int((lab == case.label_value).sum())
        # a box from the truth gives a sensible mask only if image and truth are aligned
        assert recs[0].dice > 0.5, recs[0]
        assert recs[0].nsd > 0.3 and np.isfinite(recs[0].hd95)
