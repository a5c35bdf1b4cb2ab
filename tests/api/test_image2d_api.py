"""2D images through the jobs API: a PNG / JPEG / single-frame DICOM upload becomes a job,
prompts are image pixels (x = column, y = row from the top-left), results come back at the
picture's exact size as PNG, NIfTI or DICOM-SEG. Real files: SAM-6D's RGB scene and its
reference mask (shared data); a DX radiograph written with pydicom."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from segloop.engines import get_engine
from segloop.engines.image2d import segment_image
from segloop.io.image2d import load_image2d
from segloop.jobs.records import JobRecord
from segloop.types import Prompts

from .conftest import follow, upload

#: SAM-6D's reference region in rgb.png (README of the shared data): x 377-433, y 228-314
BOX = [372, 223, 438, 319]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def _png(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)))


def _run(client: TestClient, jid: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(f"/api/v1/jobs/{jid}/{kind}", json=body)
    assert r.status_code == 202, r.text
    ev = follow(client, jid, r.json()["task_id"])
    assert ev[-1]["type"] == "done", ev[-1]
    return ev[-1]


def _mask(client: TestClient, jid: str) -> np.ndarray:
    r = client.get(f"/api/v1/jobs/{jid}/result", params={"format": "png", "style": "labels"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
    return _png(r.content)


def write_dx(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME1") -> Path:
    """A single-frame DX radiograph (16-bit grey, ImagerPixelSpacing 0.2 x 0.3 mm)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "p1", "Test^Xray", "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    ds.ImagerPixelSpacing = [0.2, 0.3]
    ds.PixelData = np.ascontiguousarray(pixels.astype(np.uint16)).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_rgb_png_job_matches_segment_and_exports_at_its_size(
        client: TestClient, data: Path, tmp_path: Path) -> None:
    src = data / "sam6d/rgb.png"
    truth = np.asarray(Image.open(data / "sam6d/ism_reference_mask.png")) > 0
    r = upload(client, src)
    assert r.status_code == 201, r.text
    job = r.json()
    jid = job["job_id"]
    assert job["image2d"] is True and job["source_format"] == "2d-png"
    assert job["shape"] == [640, 480, 1] and job["source_shape"] == [480, 640]

    shown = client.get(f"/api/v1/jobs/{jid}/image")  # the picture in colour, as uploaded
    assert shown.status_code == 200
    np.testing.assert_array_equal(_png(shown.content),
                                  np.asarray(Image.open(src).convert("RGB")))

    _run(client, jid, "initial-mask", {"box": BOX})  # no slice_index on a 2D image
    mask = _mask(client, jid)
    assert mask.shape == (480, 640) and set(np.unique(mask)) == {0, 1}
    assert _dice(mask > 0, truth) > 0.7, _dice(mask > 0, truth)  # 0.74: a reference, not a label
    # the same mask as `segloop segment rgb.png --box ...` with the same engine
    ref = segment_image(get_engine("classic"), load_image2d(src), Prompts.make(BOX))
    np.testing.assert_array_equal(mask > 0, ref)

    colour = _png(client.get(f"/api/v1/jobs/{jid}/result", params={"format": "png"}).content)
    assert colour.shape == (480, 640, 4)
    assert (colour[..., 3] > 0).sum() == (mask > 0).sum()

    nii = client.get(f"/api/v1/jobs/{jid}/result")  # NIfTI: x = column, y = row
    assert nii.status_code == 200
    (tmp_path / "m.nii.gz").write_bytes(nii.content)
    arr = np.asarray(nib.load(str(tmp_path / "m.nii.gz")).dataobj)
    assert arr.shape == (640, 480, 1)
    np.testing.assert_array_equal(arr[:, :, 0].T, mask)

    seg = client.get(f"/api/v1/jobs/{jid}/result", params={"format": "dicom-seg"})
    assert seg.status_code == 409 and "DICOM" in seg.json()["detail"]
    vol = client.get(f"/api/v1/jobs/{jid}/volume")  # the grey canonical slice, for volume tools
    assert vol.status_code == 200
    # the protocols' "uploaded volume" of a picture is that one-slice grid, not the PNG
    src_vol = client.app.state.services.source_volume(JobRecord(**job))  # type: ignore[attr-defined]
    assert src_vol.shape == (640, 480, 1) and src_vol.data[BOX[0], BOX[1], 0] == np.round(
        np.asarray(Image.open(src).convert("RGB"), float)[BOX[1], BOX[0]] @ [0.299, 0.587, 0.114])


def test_points_refine_propagate_and_edit(client: TestClient, data: Path, tmp_path: Path) -> None:
    jpg = tmp_path / "scene.jpg"
    Image.open(data / "sam6d/rgb.png").convert("RGB").save(jpg, quality=95)
    truth = np.asarray(Image.open(data / "sam6d/ism_reference_mask.png")) > 0
    job = upload(client, jpg).json()
    jid = job["job_id"]
    assert job["source_format"] == "2d-jpeg" and job["image2d"]
    _run(client, jid, "initial-mask", {"slice_index": 0, "box": BOX})
    first = _mask(client, jid) > 0
    # a negative click on a pixel the mask holds takes it out: the correction is applied
    ys, xs = np.nonzero(first)
    far = int(np.argmax((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
    end = _run(client, jid, "refine", {"points": [[int(xs[far]), int(ys[far])]],
                                       "point_labels": [0]})
    assert end["version"] == 2
    second = _mask(client, jid) > 0
    assert not second[ys[far], xs[far]] and _dice(second, truth) > 0.7
    assert _run(client, jid, "propagate", {})["version"] == 3  # one slice: kept as it is
    np.testing.assert_array_equal(_mask(client, jid) > 0, second)

    edit = np.zeros((480, 640), np.uint8)  # a brush edit as a 0/255 PNG of the picture's size
    edit[100:150, 200:260] = 255
    buf = io.BytesIO()
    Image.fromarray(edit).save(buf, format="PNG")
    r = client.put(f"/api/v1/jobs/{jid}/mask", content=buf.getvalue(),
                   headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(_mask(client, jid), edit // 255)
    small = io.BytesIO()
    Image.fromarray(edit[:100]).save(small, format="PNG")
    r = client.put(f"/api/v1/jobs/{jid}/mask", content=small.getvalue(),
                   headers={"content-type": "image/png"})
    assert r.status_code == 422 and "640 x 100" in r.json()["detail"]
    # a positive click after the edit: the edit's box plus the click
    _run(client, jid, "refine", {"points": [[230, 125]], "point_labels": [1]})
    assert _mask(client, jid)[125, 230] == 1


def test_dicom_radiograph_job_inverted_with_dicom_seg(client: TestClient, tmp_path: Path) -> None:
    px = np.full((90, 120), 3000, np.uint16)  # MONOCHROME1: low values are bright
    px[30:60, 40:90] = 500
    path = write_dx(tmp_path / "chest.dcm", px)
    job = client.post("/api/v1/jobs", files={"file": ("chest.dcm", path.read_bytes())}).json()
    jid = job["job_id"]
    assert job["source_format"] == "2d-dicom" and job["shape"] == [120, 90, 1]
    assert job["spacing"] == [0.3, 0.2, 1.0] and job["modality"] == "DX"
    shown = _png(client.get(f"/api/v1/jobs/{jid}/image").content)
    assert shown.shape == (90, 120) and shown[45, 60] > shown[5, 5]  # inverted for display
    _run(client, jid, "initial-mask", {"box": [35, 25, 95, 65]})
    mask = _mask(client, jid) > 0
    truth = np.zeros_like(mask)
    truth[30:60, 40:90] = True
    assert _dice(mask, truth) > 0.9
    r = client.get(f"/api/v1/jobs/{jid}/result", params={"format": "dicom-seg"})
    assert r.status_code == 200, r.text
    seg = pydicom.dcmread(io.BytesIO(r.content))
    src = pydicom.dcmread(path)
    assert seg.Modality == "SEG" and (seg.Rows, seg.Columns) == (90, 120)
    ref = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID
    frame = seg.pixel_array.astype(bool)
    np.testing.assert_array_equal(frame.reshape(90, 120), mask)


@pytest.mark.parametrize(("body", "says"), [
    ({"box": [600, 10, 700, 50]}, "outside"),
    ({"box": [10, 10, 10, 50]}, "one voxel wide"),
    ({"slice_index": 1, "box": [10, 10, 50, 50]}, "slice index 1"),
    ({"points": [[10, 500]], "point_labels": [1]}, "outside"),
])
def test_bad_prompts_on_an_image_get_one_line(client: TestClient, data: Path,
                                              body: dict[str, Any], says: str) -> None:
    jid = upload(client, data / "sam6d/rgb.png").json()["job_id"]
    r = client.post(f"/api/v1/jobs/{jid}/initial-mask", json=body)
    assert r.status_code in (400, 422) and says in r.json()["detail"], r.text
    assert "\n" not in r.json()["detail"]


def test_bad_picture_uploads_get_one_line(client: TestClient, data: Path, tmp_path: Path) -> None:
    raw = (data / "sam6d/rgb.png").read_bytes()
    r = client.post("/api/v1/jobs", files={"file": ("cut.png", raw[: len(raw) // 3])})
    assert r.status_code in (400, 422), r.text
    detail = r.json()["detail"]
    assert "cut.png" in detail and "\n" not in detail and str(tmp_path) not in detail
    big = tmp_path / "bomb.png"  # 30000 x 30000 declared: refused from the header
    Image.new("1", (30000, 30000)).save(big)
    r = client.post("/api/v1/jobs", files={"file": ("bomb.png", big.read_bytes())})
    assert r.status_code == 413 and "pixels" in r.json()["detail"], r.text
    assert client.get("/api/v1/jobs").json() == []  # nothing left behind
