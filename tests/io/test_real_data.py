"""Every image and label of ../shared/data/cases.csv loads, with label and image aligned."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from segloop.io import load_label, load_volume

pytestmark = pytest.mark.shared_data


def _rows(shared: Path) -> list[dict[str, str]]:
    with open(shared / "cases.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_every_case_loads_and_labels_align(shared: Path) -> None:
    cache: dict[str, object] = {}
    for row in _rows(shared):
        img = cache.get(row["image"]) or load_volume(shared / row["image"])
        cache[row["image"]] = img
        assert img.data.ndim == 3 and img.modality == row["modality"], row["case_id"]
        assert all(s > 0 for s in img.spacing)
        target = load_label(shared / row["label"], img, row["label_value"])
        raw = load_volume(shared / row["label"]).data
        n_raw = int(
            (raw > 0).sum() if row["label_value"] == "any" else (raw == int(row["label_value"])).sum()
        )
        assert target.shape == img.canonical().shape
        assert target.sum() == n_raw > 0, row["case_id"]  # same grid up to flips: nothing lost


def test_dicom_label_aligns_with_anatomy(shared: Path) -> None:
    """The DICOM case's label is stored Y-flipped; aligned, the liver is soft tissue."""
    ct = load_volume(shared / "totalseg" / "example_ct_dicom")
    liver = load_label(shared / "totalseg" / "example_seg_dicom.nii.gz", ct, 5)
    hu = ct.canonical().data
    assert 30 < float(hu[liver].mean()) < 150
    assert ct.modality == "CT" and ct.meta["transfer_syntax"] == "1.2.840.10008.1.2.4.90"
