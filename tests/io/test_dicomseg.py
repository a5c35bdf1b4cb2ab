"""DICOM-SEG: dcmqi's liver.dcm against its NRRD label, and write -> read round trips."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest

from segloop.errors import InputError
from segloop.io import Volume, load_label, load_volume, read_dicom_seg, write_dicom_seg

WriteSeries = Callable[..., list[Path]]


def test_dcmqi_liver_seg_matches_nrrd_label(shared: Path) -> None:
    ct = load_volume(shared / "dcmqi" / "ct-3slice")
    seg = read_dicom_seg(shared / "dcmqi" / "liver.dcm", reference=ct)
    truth = load_label(shared / "dcmqi" / "liver_seg.nrrd", ct, 1)
    assert seg.segments == {1: "Liver"}
    assert seg.labels.shape == ct.canonical().shape
    assert truth.sum() > 10_000
    assert np.array_equal(seg.masks[1], truth)  # voxel for voxel
    assert ct.dicom is not None and seg.referenced_series_uid == ct.dicom.series_uid
    own = read_dicom_seg(shared / "dcmqi" / "liver.dcm")  # the SEG's own frame geometry
    assert own.geometry.shape == ct.shape
    assert np.allclose(own.geometry.affine, ct.affine, atol=1e-3)
    assert np.array_equal(own.labels, seg.labels)


def test_dcmqi_overlapping_segments(shared: Path) -> None:
    ct = load_volume(shared / "dcmqi" / "ct-3slice")
    seg = read_dicom_seg(shared / "dcmqi" / "partial_overlaps.dcm", reference=ct)
    assert len(seg.segments) == 5
    assert all(m.any() for m in seg.masks.values())
    overlap = seg.masks[1] & seg.masks[2] & ~seg.masks[3]
    assert overlap.any() and (seg.labels[overlap] == 2).all()  # highest number wins


def test_round_trip_synthetic_series(tmp_path: Path, dicom_series: WriteSeries) -> None:
    dicom_series(tmp_path / "s", n=5, rows=12, cols=10, iop=(0, 1, 0, 0, 0, -1))
    vol = load_volume(tmp_path / "s")
    labels = np.zeros(vol.canonical().shape, np.uint8)
    labels[1:4, 2:6, 1:3] = 2
    labels[3:5, 7:9, 3:5] = 7  # canonical shape is (5, 10, 12) for this orientation
    out = write_dicom_seg(labels, vol, tmp_path / "seg.dcm", {2: "liver", 7: "tumour"})
    ds = pydicom.dcmread(out)
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["liver", "tumour"]
    assert ds.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    assert ds.SegmentSequence[0].SegmentAlgorithmName == "segloop"
    assert vol.dicom is not None
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == vol.dicom.series_uid
    back = read_dicom_seg(out, reference=vol)
    assert back.segments == {1: "liver", 2: "tumour"}
    assert np.array_equal(back.masks[1], labels == 2)
    assert np.array_equal(back.masks[2], labels == 7)


def test_round_trip_shared_jpeg2000_series(tmp_path: Path, shared: Path) -> None:
    vol = load_volume(shared / "totalseg" / "example_ct_dicom")
    truth = load_label(shared / "totalseg" / "example_seg_dicom.nii.gz", vol, 5)
    out = write_dicom_seg(truth.astype(np.uint8), vol, tmp_path / "liver.dcm", {1: "liver"})
    back = read_dicom_seg(out, reference=vol)
    assert np.array_equal(back.masks[1], truth)


def test_write_dicom_seg_needs_dicom_input(tmp_path: Path) -> None:
    vol = Volume(data=np.zeros((3, 3, 3), np.int16), affine=np.eye(4), source_format="nifti")
    with pytest.raises(InputError, match="needs DICOM input"):
        write_dicom_seg(np.ones((3, 3, 3), np.uint8), vol, tmp_path / "x.dcm")


def test_empty_mask_and_non_seg_file(tmp_path: Path, dicom_series: WriteSeries) -> None:
    files = dicom_series(tmp_path / "s", n=2)
    vol = load_volume(tmp_path / "s")
    with pytest.raises(InputError, match="empty"):
        write_dicom_seg(np.zeros(vol.canonical().shape, np.uint8), vol, tmp_path / "x.dcm")
    with pytest.raises(InputError, match="not a DICOM Segmentation"):
        read_dicom_seg(files[0])


def test_seg_from_zipped_series(tmp_path: Path, dicom_series: WriteSeries) -> None:
    import zipfile

    files = dicom_series(tmp_path / "s", n=3)
    with zipfile.ZipFile(tmp_path / "s.zip", "w") as zf:
        for f in files:
            zf.write(f, f"series/{f.name}")
    vol = load_volume(tmp_path / "s.zip")
    labels = np.zeros(vol.canonical_shape, np.uint8)
    labels[1:3, 2:4, 1] = 1
    back = read_dicom_seg(write_dicom_seg(labels, vol, tmp_path / "seg.dcm"), reference=vol)
    assert np.array_equal(back.labels, labels)
