"""End-to-end API flow on the embedded queue with real volumes and the classic engine."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import nibabel as nib
import numpy as np
from fastapi.testclient import TestClient

from segloop.engines import drive, get_engine
from segloop.io import load_volume
from segloop.types import Prompts

from .conftest import follow, liver_box, nifti_bytes, upload, zip_folder


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def test_health_and_docs(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/api/v1/jobs", "/api/v1/jobs/{job_id}/initial-mask", "/api/v1/jobs/{job_id}/events",
              "/api/v1/jobs/{job_id}/result", "/api/v1/system/model/reload"):
        assert p in paths


def test_full_loop_nifti(client: TestClient, data: Path, tmp_path: Path) -> None:
    src = data / "totalseg/example_ct_sm.nii.gz"
    r = upload(client, src, name="../../etc/passwd")
    assert r.status_code == 201, r.text
    job = r.json()
    jid = job["job_id"]
    assert job["shape"] == [122, 101, 30] and job["modality"] == "CT"
    assert job["spacing"] == [3.0, 3.0, 3.0] and job["orientation"] == "RAS"
    assert job["filename"] == "passwd"  # a label only; never used as a path

    vol = client.get(f"/api/v1/jobs/{jid}/volume")
    assert vol.status_code == 200
    (tmp_path / "v.nii").write_bytes(vol.content)  # uncompressed NIfTI
    can = nib.load(str(tmp_path / "v.nii"))
    assert can.shape == (122, 101, 30)
    assert nib.aff2axcodes(can.affine) == ("R", "A", "S")

    z, box, truth = liver_box(data)
    r = client.post(f"/api/v1/jobs/{jid}/initial-mask", json={"slice_index": z, "box": list(box)})
    assert r.status_code == 202
    ev = follow(client, jid, r.json()["task_id"])
    assert ev[0]["type"] == "status" and ev[-1]["type"] == "done", ev[-1]
    assert ev[-1]["version"] == 1

    png = client.get(f"/api/v1/jobs/{jid}/result", params={"format": "png", "slice_index": z,
                                                          "style": "labels"})
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    from PIL import Image

    sl = np.asarray(Image.open(io.BytesIO(png.content)))
    assert sl.shape == (101, 122) and sl.max() == 1

    r = client.post(f"/api/v1/jobs/{jid}/propagate", json={})
    ev = follow(client, jid, r.json()["task_id"])
    progress = [e for e in ev if e["type"] == "progress" and "slices_done" in e]
    assert progress and progress[-1]["slices_done"] == progress[-1]["slices_total"] == 29
    assert any(e["eta_seconds"] is not None for e in progress)
    assert ev[-1]["type"] == "done" and ev[-1]["version"] == 2

    st = client.get(f"/api/v1/jobs/{jid}/status").json()
    assert st["state"] == "succeeded" and st["progress"] == 1.0 and st["current_version"] == 2

    res = client.get(f"/api/v1/jobs/{jid}/result")
    assert res.status_code == 200 and res.headers["x-mask-version"] == "2"
    (tmp_path / "m.nii.gz").write_bytes(res.content)
    out = nib.load(str(tmp_path / "m.nii.gz"))
    ref = nib.load(str(src))
    assert out.shape == ref.shape and np.allclose(out.affine, ref.affine)
    mask = np.asarray(out.dataobj)
    assert mask.dtype == np.uint8

    cres = client.get(f"/api/v1/jobs/{jid}/result", params={"grid": "canonical"})
    (tmp_path / "c.nii.gz").write_bytes(cres.content)
    cimg = nib.load(str(tmp_path / "c.nii.gz"))
    assert np.allclose(cimg.affine, can.affine)
    assert np.array_equal(np.asarray(cimg.dataobj), mask)  # this file is already canonical

    # same Dice as the engine called directly (what `segloop segment` does)
    sess = get_engine("classic").open(load_volume(src))
    m2 = sess.segment_slice(z, Prompts.make(box))
    drive(sess.propagate(z, m2))
    assert np.array_equal(mask.astype(bool), sess.mask(1))
    assert _dice(mask, truth) > 0.7

    # a correction on another slice
    zc = z - 6
    xs, ys = np.nonzero(truth[:, :, zc])
    r = client.post(f"/api/v1/jobs/{jid}/refine", json={
        "slice_index": zc, "points": [[int(xs.mean()), int(ys.mean())]], "point_labels": [1]})
    assert r.status_code == 202
    assert follow(client, jid, r.json()["task_id"])[-1]["version"] == 3

    vs = client.get(f"/api/v1/jobs/{jid}/versions").json()
    assert [v["source"] for v in vs] == ["initial-mask", "propagate", "refine"]
    assert vs[-1]["current"] and vs[-1]["engine"] == "classic" and vs[-1]["author"] == "local"


def test_versions_edit_undo_review(client: TestClient, data: Path, tmp_path: Path,
                                   settings) -> None:  # type: ignore[no-untyped-def]
    src = data / "totalseg/example_ct_sm.nii.gz"
    jid = upload(client, src).json()["job_id"]
    z, box, _ = liver_box(data)
    t = client.post(f"/api/v1/jobs/{jid}/initial-mask", json={"slice_index": z, "box": list(box)})
    follow(client, jid, t.json()["task_id"])

    # a second object
    o = client.post(f"/api/v1/jobs/{jid}/objects", json={"name": "spleen", "colour": "#00ff00",
                                                        "label_value": 7})
    assert o.status_code == 201 and o.json()["object_id"] == 2
    ref = nib.load(str(src))
    edit = np.zeros(ref.shape, np.uint8)
    edit[10:20, 10:20, 5:8] = 7
    edit[40:50, 40:50, 5] = 1
    r = client.put(f"/api/v1/jobs/{jid}/mask", content=nifti_bytes(edit, ref.affine))
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2
    labels = client.get(f"/api/v1/jobs/{jid}/result", params={"format": "png", "slice_index": 6,
                                                             "style": "labels"})
    from PIL import Image

    assert 7 in np.asarray(Image.open(io.BytesIO(labels.content)))

    # a refine after an edit builds on the edit (the session replays it)
    r = client.post(f"/api/v1/jobs/{jid}/refine", json={"slice_index": z, "box": list(box)})
    assert follow(client, jid, r.json()["task_id"])[-1]["type"] == "done"
    res = client.get(f"/api/v1/jobs/{jid}/result")
    (tmp_path / "a.nii.gz").write_bytes(res.content)
    m = np.asarray(nib.load(str(tmp_path / "a.nii.gz")).dataobj)
    assert (m[10:20, 10:20, 5:8] == 7).all() and (m[:, :, z] == 1).sum() > 50

    assert client.post(f"/api/v1/jobs/{jid}/undo").json()["current_version"] == 2
    assert client.post(f"/api/v1/jobs/{jid}/undo").json()["current_version"] == 1
    assert client.post(f"/api/v1/jobs/{jid}/redo").json()["current_version"] == 2
    vs = client.get(f"/api/v1/jobs/{jid}/versions").json()
    assert [v["current"] for v in vs] == [False, True, False]

    rv = client.post(f"/api/v1/jobs/{jid}/review", json={})
    assert rv.status_code == 200, rv.text
    ds = settings.datastore_dir
    rows = list(csv.DictReader((ds / "manifest.csv").open()))
    assert {r["structure"] for r in rows} == {"object 1", "spleen"}
    case = ds / rv.json()["datastore_case"]
    lab = nib.load(str(case / "label.nii.gz"))
    img = nib.load(str(case / "image.nii.gz"))
    assert lab.shape == img.shape == ref.shape
    assert set(np.unique(np.asarray(lab.dataobj))) == {0, 1, 7}
    assert client.get(f"/api/v1/jobs/{jid}/versions").json()[1]["reviewed"]


def test_dicom_zip_and_dicom_seg(client: TestClient, data: Path, tmp_path: Path) -> None:
    z = zip_folder(data / "totalseg/example_ct_dicom", tmp_path / "series.zip")
    r = upload(client, z, name="series.zip")
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["source_format"] == "dicom" and job["modality"] == "CT"
    jid = job["job_id"]
    nx, ny, nz = job["shape"]
    t = client.post(f"/api/v1/jobs/{jid}/initial-mask", json={
        "slice_index": nz // 2, "box": [nx // 2 - 40, ny // 2 - 40, nx // 2 + 40, ny // 2 + 40]})
    assert follow(client, jid, t.json()["task_id"])[-1]["type"] == "done"
    seg = client.get(f"/api/v1/jobs/{jid}/result", params={"format": "dicom-seg"})
    assert seg.status_code == 200, seg.text
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(seg.content))
    assert ds.Modality == "SEG"
    nii = client.get(f"/api/v1/jobs/{jid}/result")
    (tmp_path / "m.nii.gz").write_bytes(nii.content)
    assert nib.load(str(tmp_path / "m.nii.gz")).shape == tuple(job["source_shape"])


def test_dicom_seg_needs_dicom_and_system(client: TestClient, data: Path) -> None:
    jid = upload(client, data / "pyradiomics/brain1_image.nrrd").json()["job_id"]
    r = client.get(f"/api/v1/jobs/{jid}/result", params={"format": "dicom-seg"})
    assert r.status_code == 409 and "DICOM" in r.json()["detail"]
    st = client.get("/api/v1/system/status").json()
    assert st["queue"] == "embedded" and "memory_total_bytes" in st["host"]
    assert isinstance(client.get("/api/v1/system/gpu").json(), list)
    assert client.get("/api/v1/system/jobs/active").json() == []
    model = client.get("/api/v1/system/model").json()
    assert "classic" in model["engines"]
    rl = client.post("/api/v1/system/model/reload", json={"engine": "classic"}).json()
    assert rl["generation"] == "1" and rl["default_engine"] == "classic"
    metrics = client.get("/metrics").text
    assert "segloop_http_requests_total" in metrics and "segloop_tasks_active" in metrics
    assert client.get("/api/v1/jobs").json()[0]["job_id"] == jid
    assert client.delete(f"/api/v1/jobs/{jid}").status_code == 204
    assert client.get(f"/api/v1/jobs/{jid}").status_code == 404


def test_several_objects(client: TestClient, data: Path, tmp_path: Path) -> None:
    src = data / "totalseg/example_ct_sm.nii.gz"
    jid = upload(client, src).json()["job_id"]
    seg = np.asarray(nib.load(str(data / "totalseg/example_seg.nii.gz")).dataobj)
    spleen = client.post(f"/api/v1/jobs/{jid}/objects", json={"name": "spleen",
                                                             "label_value": 9}).json()
    assert spleen["object_id"] == 2
    assert client.patch(f"/api/v1/jobs/{jid}/objects/1", json={"name": "liver"}).status_code == 200
    for oid, value in ((1, 5), (2, 1)):
        lab = seg == value
        z = int(np.argmax(lab.sum(axis=(0, 1))))
        xs, ys = np.nonzero(lab[:, :, z])
        t = client.post(f"/api/v1/jobs/{jid}/initial-mask", json={
            "slice_index": z, "object_id": oid,
            "box": [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]}).json()
        follow(client, jid, t["task_id"])
        t = client.post(f"/api/v1/jobs/{jid}/propagate", json={"object_id": oid}).json()
        assert follow(client, jid, t["task_id"])[-1]["type"] == "done"
    res = client.get(f"/api/v1/jobs/{jid}/result")
    (tmp_path / "m.nii.gz").write_bytes(res.content)
    m = np.asarray(nib.load(str(tmp_path / "m.nii.gz")).dataobj)
    assert set(np.unique(m)) == {0, 1, 9}
    assert _dice(m == 1, seg == 5) > 0.7 and _dice(m == 9, seg == 1) > 0.5
    objs = client.get(f"/api/v1/jobs/{jid}/objects").json()
    assert [(o["name"], o["label_value"]) for o in objs] == [("liver", 1), ("spleen", 9)]
    r = client.post(f"/api/v1/jobs/{jid}/objects", json={"label_value": 9})
    assert r.status_code == 409 and "already used" in r.json()["detail"]
