"""CT presets and MR percentile scaling, checked on hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from segloop.errors import InputError
from segloop.io import CT_PRESETS, CtPreset, Volume, normalize, scale_mr, window_ct


def test_presets_are_standard() -> None:
    assert CT_PRESETS[CtPreset.LUNG] == (-600.0, 1500.0)
    assert CT_PRESETS[CtPreset.BRAIN] == (40.0, 80.0)
    assert set(CtPreset) == {"soft_tissue", "abdomen", "liver", "mediastinum", "lung", "bone",
                             "brain"}


def test_window_ct_values() -> None:
    hu = np.array([-1000, -160, 40, 240, 3000], np.int16)
    out = window_ct(hu, "soft_tissue")  # level 40, width 400: [-160, 240]
    assert out.dtype == np.float32
    assert np.allclose(out, [0, 0, 0.5, 1, 1])
    assert np.allclose(window_ct(hu, (0.0, 2000.0)), [0, 0.42, 0.52, 0.62, 1])
    assert window_ct(hu, "Soft tissue")[2] == pytest.approx(0.5)
    with pytest.raises(InputError, match="unknown window preset"):
        window_ct(hu, "kidney")
    with pytest.raises(InputError, match="positive"):
        window_ct(hu, (0.0, 0.0))


def test_scale_mr_percentiles() -> None:
    data = np.arange(1001, dtype=np.float32)
    out = scale_mr(data, 10, 90)
    assert out[100] == pytest.approx(0) and out[900] == pytest.approx(1)
    assert out[500] == pytest.approx(0.5) and out.min() == 0 and out.max() == 1
    assert not scale_mr(np.full((3, 3, 3), 7.0)).any()


def test_normalize_by_modality() -> None:
    data = np.array([[[-1000.0, 40.0, 500.0]]])
    ct = Volume(data=data, affine=np.eye(4), source_format="npz", modality="CT")
    mr = Volume(data=data, affine=np.eye(4), source_format="npz", modality="MR")
    assert np.allclose(normalize(ct), [[[0, 0.5, 1]]])
    assert np.allclose(normalize(ct, "lung"), window_ct(data, "lung"))
    assert normalize(mr).max() == pytest.approx(1.0) and normalize(mr).min() == 0
