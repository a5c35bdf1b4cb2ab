"""Manifest reading: columns, label values, paths relative to the root, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from segloop.datastore.manifest import ManifestError, read_manifest
from segloop.errors import InputError

HEADER = "case_id,image,label,label_value,structure,modality"


def _files(root: Path) -> None:
    (root / "img.nii.gz").write_bytes(b"x")
    (root / "lab.nii.gz").write_bytes(b"x")
    (root / "dicom").mkdir()


def test_reads_cases_with_optional_patient_and_any(tmp_path: Path) -> None:
    _files(tmp_path)
    m = tmp_path / "m.csv"
    m.write_text(
        f"{HEADER},patient_id\n"
        "a,img.nii.gz,lab.nii.gz,5,liver,CT,P1\n"
        "\n"
        "# a comment line\n"
        "b, dicom ,lab.nii.gz,any,lesion,,\n"
    )
    cases = read_manifest(m)
    assert [c.case_id for c in cases] == ["a", "b"]
    a, b = cases
    assert a.image == tmp_path / "img.nii.gz" and a.label_value == 5 and a.patient_id == "P1"
    assert a.modality == "CT" and a.structure == "liver"
    assert b.image == tmp_path / "dicom" and b.label_value is None
    assert b.modality is None and b.patient_id == "b"  # no patient: the case is its own patient


def test_root_other_than_the_manifest_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _files(data)
    m = tmp_path / "m.csv"
    m.write_text(f"{HEADER}\na,img.nii.gz,lab.nii.gz,1,x,MR\n")
    with pytest.raises(ManifestError, match="not found under"):
        read_manifest(m)
    assert read_manifest(m, root=data)[0].label == data / "lab.nii.gz"


def test_missing_columns_are_named(tmp_path: Path) -> None:
    m = tmp_path / "m.csv"
    m.write_text("case_id,image,label\na,b,c\n")
    with pytest.raises(ManifestError, match=r"lacks column.*label_value, structure, modality"):
        read_manifest(m)


def test_every_bad_row_is_listed(tmp_path: Path) -> None:
    _files(tmp_path)
    m = tmp_path / "m.csv"
    m.write_text(
        f"{HEADER}\n"
        "a,img.nii.gz,missing.nii.gz,1,x,CT\n"
        "b,img.nii.gz,lab.nii.gz,liver,x,CT\n"
        "c,img.nii.gz,lab.nii.gz,0,x,CT\n"
        "a,img.nii.gz,lab.nii.gz,1,x,CT\n"
        ",img.nii.gz,lab.nii.gz,1,x,CT\n"
    )
    with pytest.raises(ManifestError) as info:
        read_manifest(m)
    msg = str(info.value)
    assert "row 2 (a): label missing.nii.gz not found" in msg
    assert "row 3 (b): label_value 'liver' is neither an integer nor 'any'" in msg
    assert "row 4 (c): label_value 0 must be >= 1" in msg
    assert "row 5 (a): duplicate case_id" in msg
    assert "row 6: empty case_id" in msg
    assert isinstance(info.value, InputError)


def test_missing_or_empty_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "nope.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ManifestError, match="empty"):
        read_manifest(empty)
    header_only = tmp_path / "h.csv"
    header_only.write_text(HEADER + "\n")
    with pytest.raises(ManifestError, match="no cases"):
        read_manifest(header_only)
    with pytest.raises(ManifestError, match="not a folder"):
        read_manifest(header_only, root=tmp_path / "nowhere")


def test_float_label_value_that_is_an_integer(tmp_path: Path) -> None:
    _files(tmp_path)
    m = tmp_path / "m.csv"
    m.write_text(f"{HEADER}\na,img.nii.gz,lab.nii.gz,2.0,x,CT\nb,img.nii.gz,lab.nii.gz,2.5,x,CT\n")
    with pytest.raises(ManifestError, match=r"label_value '2.5' is not an integer"):
        read_manifest(m)
