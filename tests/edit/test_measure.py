"""Per-object measurements: voxels, mL, extent, CSV."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from segloop.edit.measure import measure, measures_csv


def test_measure_volume_and_extent_in_mm() -> None:
    lab = np.zeros((10, 20, 30), np.uint8)
    lab[2:5, 3:9, 10:20] = 4  # 3 x 6 x 10 voxels
    rows = measure(lab, (0.5, 2.0, 3.0), [1, 4])
    by = {r.label_value: r for r in rows}
    assert by[1].voxels == 0 and by[1].bbox_min is None and by[1].volume_ml == 0
    r = by[4]
    assert r.voxels == 180
    assert r.volume_ml == pytest.approx(180 * 3.0 / 1000)
    assert r.bbox_min == (2, 3, 10) and r.bbox_max == (4, 8, 19)
    assert r.extent_mm == pytest.approx((1.5, 12.0, 30.0))
    assert r.slices == 10


def test_measures_csv_reads_back() -> None:
    lab = np.zeros((4, 4, 4), np.uint8)
    lab[0, 0, 0] = 2
    text = measures_csv(measure(lab, (1, 1, 1), [1]), {1: 'a "q"', 2: "liver"})
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["name"] for r in rows] == ['a "q"', "liver"]
    assert rows[1]["voxels"] == "1" and rows[1]["volume_ml"] == "0.0010"
    assert rows[0]["x_min"] == ""
