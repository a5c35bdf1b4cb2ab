"""The editing routes on a real CT: each edit is a new version (undo works), touches one object,
and bad requests are one-line 4xx errors; a propagation range stops a leak."""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from fastapi.testclient import TestClient

from .conftest import follow, liver_box, nifti_bytes, upload

CT = "totalseg/example_ct_sm.nii.gz"


def _labels(client: TestClient, jid: str) -> np.ndarray:
    r = client.get(f"/api/v1/jobs/{jid}/result", params={"format": "nii.gz", "grid": "canonical"})
    assert r.status_code == 200, r.text
    img: Any = nib.Nifti1Image.from_bytes(gzip.decompress(r.content))
    return np.asarray(img.dataobj)


def _job_with_truth(client: TestClient, data: Path) -> tuple[str, np.ndarray]:
    """A job whose version 1 is the liver (label 1) plus a leak blob on slices 20..24 that
    touches nothing, and a second object (label 7) the edits must never change."""
    jid = upload(client, data / CT).json()["job_id"]
    o = client.post(f"/api/v1/jobs/{jid}/objects", json={"name": "other", "label_value": 7})
    assert o.status_code == 201
    ref = nib.load(str(data / CT))
    _, _, liver = liver_box(data)
    lab = np.zeros(ref.shape, np.uint8)
    lab[liver] = 1
    lab[2:8, 2:8, 20:25] = 1  # the "leak", apart from the liver
    lab[110:118, 90:98, :] = 7
    r = client.put(f"/api/v1/jobs/{jid}/mask", content=nifti_bytes(lab, ref.affine))
    assert r.status_code == 200, r.text
    return jid, lab


def test_edits_make_versions_and_touch_one_object(client: TestClient, data: Path) -> None:
    jid, lab = _job_with_truth(client, data)
    url = f"/api/v1/jobs/{jid}/edit"

    r = client.post(url, json={"op": "remove-region", "point": [4, 4, 22], "three_d": True})
    assert r.status_code == 200, r.text
    assert r.json() == {"job_id": jid, "version": 2, "changed": 6 * 6 * 5,
                        "op": "remove-region"}
    now = _labels(client, jid)
    assert not now[2:8, 2:8, 20:25].any()
    assert ((now == 1) == ((lab == 1) & ~np.isin(np.arange(30), range(20, 25))[None, None, :]
                            | (lab == 1) & (now == 1))).all()
    assert ((now == 7) == (lab == 7)).all()

    # clear from slice 15 up: nothing of object 1 above 14, object 7 untouched
    r = client.post(url, json={"op": "clear-slices", "first_slice": 15, "base_version": 2})
    assert r.json()["version"] == 3
    now = _labels(client, jid)
    assert not (now[:, :, 15:] == 1).any() and (now[:, :, :15] == (lab[:, :, :15])).all()
    assert ((now == 7) == (lab == 7)).all()

    # nothing left to clear: no new version
    r = client.post(url, json={"op": "clear-slices", "first_slice": 15})
    assert r.json() == {"job_id": jid, "version": 3, "changed": 0, "op": "clear-slices"}

    vs = client.get(f"/api/v1/jobs/{jid}/versions").json()
    assert [v["source"] for v in vs] == ["edit", "edit:remove-region", "edit:clear-slices"]
    assert client.post(f"/api/v1/jobs/{jid}/undo").json()["current_version"] == 2
    assert (_labels(client, jid)[:, :, 15:] == 1).any()

    for op in ("smooth", "remove-islands", "fill-between"):
        r = client.post(url, json={"op": op, "object_id": 1, "min_voxels": 10})
        assert r.status_code == 200, (op, r.text)
    r = client.post(url, json={"op": "clear-object", "object_id": 2})
    assert r.json()["changed"] == int((lab == 7).sum())
    assert not (_labels(client, jid) == 7).any()


def test_bad_edits_are_clear_4xx(client: TestClient, data: Path) -> None:
    jid, _ = _job_with_truth(client, data)
    url = f"/api/v1/jobs/{jid}/edit"
    cases = [
        ({"op": "remove-region", "point": [60, 0, 0]}, 422, "not on this object"),
        ({"op": "remove-region"}, 422, "needs point"),
        ({"op": "clear-slices"}, 422, "first_slice and/or last_slice"),
        ({"op": "clear-slices", "first_slice": 10, "last_slice": 3}, 422, "after last slice"),
        ({"op": "keep-slices", "last_slice": 30}, 422, "0..29"),
        ({"op": "explode"}, 422, "op"),
        ({"op": "smooth", "object_id": 9}, 404, "no object 9"),
        ({"op": "smooth", "base_version": 0}, 409, "version 1 is current"),
    ]
    for body, status, words in cases:
        r = client.post(url, json=body)
        assert r.status_code == status, (body, r.text)
        assert words in r.text, (body, r.text)
    assert len(client.get(f"/api/v1/jobs/{jid}/versions").json()) == 1  # nothing stored


def test_measurements_json_and_csv(client: TestClient, data: Path) -> None:
    jid, lab = _job_with_truth(client, data)
    spacing = nib.load(str(data / CT)).header.get_zooms()
    ms = client.get(f"/api/v1/jobs/{jid}/measurements").json()
    by = {m["label_value"]: m for m in ms}
    assert by[1]["voxels"] == int((lab == 1).sum()) and by[1]["object_id"] == 1
    assert abs(by[1]["volume_ml"] - (lab == 1).sum() * np.prod(spacing) / 1000) < 1e-3
    assert by[7]["name"] == "other" and by[7]["bbox_min"] == [110, 90, 0]
    assert by[7]["bbox_max"] == [117, 97, 29]
    assert by[7]["extent_mm"][2] == np.float32(30 * spacing[2]).item()
    r = client.get(f"/api/v1/jobs/{jid}/measurements", params={"format": "csv"})
    assert r.headers["content-type"].startswith("text/csv") and r.headers["x-mask-version"] == "1"
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [int(x["label_value"]) for x in rows] == [1, 7]


def test_propagation_range_stops_a_leak(client: TestClient, data: Path) -> None:
    jid = upload(client, data / CT).json()["job_id"]
    z, box, _ = liver_box(data)
    t = client.post(f"/api/v1/jobs/{jid}/initial-mask", json={"slice_index": z, "box": list(box)})
    follow(client, jid, t.json()["task_id"])
    first, last = z - 3, z + 2
    t = client.post(f"/api/v1/jobs/{jid}/propagate", json={"first_slice": first,
                                                          "last_slice": last})
    assert t.status_code == 202, t.text
    events = follow(client, jid, t.json()["task_id"])
    assert events[-1]["type"] == "done", events[-1]
    # no slice outside the range is ever pushed with a mask (the engine stops at the range's
    # ends; a short task may end before the stream is read, so the pushed slices may be none)
    painted = {int(k) for e in events if e.get("masks") for k, runs in e["masks"].items()
               if len(runs) > 1}
    assert all(first <= k <= last for k in painted), painted
    m = _labels(client, jid) == 1
    zs = np.flatnonzero(m.any(axis=(0, 1)))
    assert zs.min() == first and zs.max() == last

    bad = client.post(f"/api/v1/jobs/{jid}/propagate", json={"first_slice": 9, "last_slice": 2})
    assert bad.status_code == 422 and "after last_slice" in bad.text
    bad = client.post(f"/api/v1/jobs/{jid}/propagate", json={"last_slice": 30})
    assert bad.status_code == 422 and "slices 0..29" in bad.text


def test_open_an_existing_dicom_seg_onto_a_job(client: TestClient, data: Path,
                                               tmp_path: Path) -> None:
    """A DICOM-SEG exported from one job opens onto a new job of the same series: the same
    voxels, the segment's name on the object; a SEG of another place is refused."""
    from .conftest import zip_folder

    z = zip_folder(data / "totalseg/example_ct_dicom", tmp_path / "series.zip")
    a = upload(client, z, name="series.zip").json()
    nx, ny, nz = a["shape"]
    t = client.post(f"/api/v1/jobs/{a['job_id']}/initial-mask", json={
        "slice_index": nz // 2, "box": [nx // 2 - 40, ny // 2 - 40, nx // 2 + 40, ny // 2 + 40]})
    follow(client, a["job_id"], t.json()["task_id"])
    client.patch(f"/api/v1/jobs/{a['job_id']}/objects/1", json={"name": "liver"})
    seg = client.get(f"/api/v1/jobs/{a['job_id']}/result", params={"format": "dicom-seg"})
    assert seg.status_code == 200, seg.text
    want = _labels(client, a["job_id"])

    b = upload(client, z, name="series.zip").json()
    r = client.put(f"/api/v1/jobs/{b['job_id']}/mask", content=seg.content)
    assert r.status_code == 200, r.text
    assert np.array_equal(_labels(client, b["job_id"]) > 0, want > 0)
    objs = client.get(f"/api/v1/jobs/{b['job_id']}/objects").json()
    assert [o["name"] for o in objs] == ["liver"]
    vs = client.get(f"/api/v1/jobs/{b['job_id']}/versions").json()
    assert vs[-1]["source"] == "import:dicom-seg"

    other = upload(client, data / CT).json()["job_id"]  # another patient's grid, far away
    r = client.put(f"/api/v1/jobs/{other}/mask", content=seg.content)
    assert r.status_code == 422 and "another series" in r.text, r.text


def test_terminology_names_code_the_dicom_seg(client: TestClient, data: Path,
                                              tmp_path: Path) -> None:
    """Objects named from the terminology list get exactly that SNOMED code in the SEG, and the
    SEG carries the SeriesDescription asked for."""
    import pydicom

    from .conftest import zip_folder

    common = client.get("/api/v1/terminology").json()
    by = {t["meaning"]: t for t in common}
    assert by["Liver"]["code"] == "10200004" and by["Liver"]["category"] == "Anatomical Structure"
    assert by["Lesion"]["category"] == "Morphologically Abnormal Structure"
    found = client.get("/api/v1/terminology", params={"q": "brain stem"}).json()
    assert found[0]["meaning"] == "Brain Stem"
    assert client.get("/api/v1/terminology", params={"q": "x" * 65}).status_code == 422

    z = zip_folder(data / "totalseg/example_ct_dicom", tmp_path / "series.zip")
    job = upload(client, z, name="series.zip").json()
    jid = job["job_id"]
    nx, ny, nz = job["shape"]
    lab = np.zeros((nx, ny, nz), np.uint8)
    lab[10:30, 10:30, 1:3] = 1
    lab[40:60, 40:60, 1:3] = 2
    aff = nib.Nifti1Image.from_bytes(  # the canonical volume is served uncompressed
        client.get(f"/api/v1/jobs/{jid}/volume").content).affine
    assert client.put(f"/api/v1/jobs/{jid}/mask", content=nifti_bytes(lab, aff)).status_code == 200
    client.patch(f"/api/v1/jobs/{jid}/objects/1", json={"name": "Liver"})
    client.patch(f"/api/v1/jobs/{jid}/objects/2", json={"name": "Lesion"})
    r = client.get(f"/api/v1/jobs/{jid}/result", params={
        "format": "dicom-seg", "series_description": "liver + lesion, reader 2"})
    assert r.status_code == 200, r.text
    ds = pydicom.dcmread(io.BytesIO(r.content))
    assert ds.SeriesDescription == "liver + lesion, reader 2"
    segs = {s.SegmentLabel: s for s in ds.SegmentSequence}
    liver = segs["Liver"].SegmentedPropertyTypeCodeSequence[0]
    lesion = segs["Lesion"].SegmentedPropertyCategoryCodeSequence[0]
    assert liver.CodeValue == "10200004" and liver.CodingSchemeDesignator == "SCT"
    assert lesion.CodeMeaning == "Morphologically Abnormal Structure"


def test_a_large_volume_has_a_preview_on_the_same_extent(client: TestClient,
                                                         tmp_path: Path) -> None:
    """Over 8 Mi voxels, GET .../volume?preview=true is every f-th voxel in-plane and every
    2f-th slice on the same physical extent; a small volume has none (404)."""
    from segloop.jobs.files import PREVIEW_VOXELS

    shape = (256, 256, 160)  # 10.5 Mi voxels
    vol = (np.arange(np.prod(shape)) % 997).astype(np.int16).reshape(shape)
    aff = np.diag([0.7, 0.7, 1.2, 1.0])
    aff[:3, 3] = [-90, -80, -100]
    src = tmp_path / "big.nii.gz"
    nib.save(nib.Nifti1Image(vol, aff), str(src))
    jid = upload(client, src).json()["job_id"]
    r = client.get(f"/api/v1/jobs/{jid}/volume", params={"preview": "true"})
    assert r.status_code == 200, r.text
    assert r.content[:2] != b"\x1f\x8b", "the preview is gzip: ingest deflated it"
    assert r.headers["content-type"] == "application/octet-stream"
    img: Any = nib.Nifti1Image.from_bytes(r.content)
    small = np.asarray(img.dataobj)
    # every 2nd voxel in-plane, every 4th slice (half the slices: half NiiVue's render passes)
    assert small.shape == (128, 128, 40) and small.size <= PREVIEW_VOXELS
    assert np.array_equal(small, vol[::2, ::2, ::4])
    assert np.allclose(img.affine, aff @ np.diag([2, 2, 4, 1]))
    full: Any = nib.Nifti1Image.from_bytes(client.get(f"/api/v1/jobs/{jid}/volume").content)
    assert full.shape == shape

    tiny = nifti_bytes(np.zeros((8, 8, 8), np.int16), np.eye(4))
    (tmp_path / "tiny.nii").write_bytes(tiny)
    small_job = upload(client, tmp_path / "tiny.nii").json()["job_id"]
    r = client.get(f"/api/v1/jobs/{small_job}/volume", params={"preview": "true"})
    assert r.status_code == 404 and "no preview" in r.text


def test_a_job_from_before_keeps_serving_its_gzip_preview(client: TestClient,
                                                         tmp_path: Path) -> None:
    """A job made when the preview was stored as preview.nii.gz still serves it (as gzip)."""
    tiny = nifti_bytes(np.zeros((8, 8, 8), np.int16), np.eye(4))
    (tmp_path / "tiny.nii").write_bytes(tiny)
    jid = upload(client, tmp_path / "tiny.nii").json()["job_id"]
    store = client.app.state.services.store  # type: ignore[attr-defined]
    (store.job_dir(jid) / "preview.nii.gz").write_bytes(gzip.compress(tiny))
    r = client.get(f"/api/v1/jobs/{jid}/volume", params={"preview": "true"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/gzip"
    assert gzip.decompress(r.content) == tiny
