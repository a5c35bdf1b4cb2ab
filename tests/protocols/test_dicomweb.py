"""OHIF's path: `segloop serve` with a real Orthanc (its DICOMweb plugin) as the MONAI Label
datastore. The test starts its own Orthanc on a free port with a temporary configuration and
storage, uploads the shared CT series to it with dicomweb-client (STOW-RS), then drives segloop
the way OHIF's MONAI Label mode does: infer by SeriesInstanceUID (segloop fetches the series
with QIDO/WADO), save the label as OHIF's ``label.bin``, and finds the DICOM-SEG stored back."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from realdata import SHARED_DATA, need_shared_data

from .conftest import Server, free_port

client_mod = pytest.importorskip("monailabel.client.client",
                                 reason="monailabel==0.8.5 (--no-deps) is a [dev] test tool")
MONAILabelClient: Any = client_mod.MONAILabelClient
ClientError: Any = client_mod.MONAILabelClientException

SERIES = SHARED_DATA / "totalseg" / "example_ct_dicom"
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
INSTALL = ("Orthanc with its DICOMweb plugin is not installed: apt-get install orthanc "
           "orthanc-dicomweb (bash scripts/install.sh --dev does it as root)")


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[str]:
    """A private Orthanc; yields its DICOMweb root URL."""
    exe = shutil.which("Orthanc")
    if exe is None or not PLUGIN.exists():
        pytest.skip(INSTALL)
    port = free_port()
    store = tmp_path / "orthanc"
    store.mkdir()
    cfg = {"Name": "segloop-test", "StorageDirectory": str(store), "IndexDirectory": str(store),
           "HttpPort": port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
           "AuthenticationEnabled": False, "Plugins": [str(PLUGIN)],
           "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    (tmp_path / "orthanc.json").write_text(json.dumps(cfg))
    log = open(tmp_path / "orthanc.log", "wb")  # noqa: SIM115 - the process owns it
    proc = subprocess.Popen([exe, str(tmp_path / "orthanc.json")], stdout=log,
                            stderr=subprocess.STDOUT)
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            if proc.poll() is not None:
                raise AssertionError((tmp_path / "orthanc.log").read_text())
            try:
                if httpx.get(f"{url}/dicom-web/studies", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError("Orthanc did not start")
        yield f"{url}/dicom-web"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()


def upload_series(dicomweb: str) -> tuple[str, str]:
    """STOW the shared CT series (20 slices) into the server; returns (study, series) UIDs.
    The shared files carry no study/series UIDs (anonymised): they get fresh ones here, as a
    PACS would hold them."""
    import pydicom
    from dicomweb_client.api import DICOMwebClient
    from pydicom.uid import generate_uid

    study, series = generate_uid(), generate_uid()
    datasets = []
    for f in sorted(SERIES.iterdir()):
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        if not ds.get("SOPInstanceUID"):
            ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        datasets.append(ds)
    res = DICOMwebClient(dicomweb).store_instances(datasets)
    assert len(res.ReferencedSOPSequence) == 20
    return study, series


def test_ohif_flow_with_orthanc(orthanc: str, serve: Any, tmp_path: Path) -> None:
    from dicomweb_client.api import DICOMwebClient

    need_shared_data()
    study, series = upload_series(orthanc)
    srv: Server = serve(SEGLOOP_DICOMWEB_URL=orthanc)
    c = MONAILabelClient(f"{srv.url}/monailabel", tmpdir=str(tmp_path))

    # the series is an image of the datastore before anyone opened it
    assert series in c.datastore()["objects"]
    nxt = c.next_sample("first", {})
    assert nxt["id"] == series and nxt["StudyInstanceUID"] == study

    # OHIF's infer: ?image=SeriesInstanceUID&output=image, NRRD uint16 uncompressed, points
    # and ROI in the series' IJK (columns, rows, slices); segloop fetches the series
    params = {"roi": [[110, 275], [195, 370], [4, 15]], "foreground": [[190, 280, 10]],
              "background": [], "result_extension": ".nrrd", "result_dtype": "uint16",
              "result_compress": False}
    r = httpx.post(f"{srv.url}/monailabel/infer/classic",
                   params={"image": series, "output": "image"},
                   files={"params": (None, json.dumps(params))}, timeout=300)
    assert r.status_code == 200, r.text
    (tmp_path / "out.nrrd").write_bytes(r.content)
    import SimpleITK as sitk

    res = sitk.ReadImage(str(tmp_path / "out.nrrd"))
    assert res.GetPixelID() == sitk.sitkUInt16
    mask = sitk.GetArrayFromImage(res).transpose(2, 1, 0)  # (columns, rows, slices)
    assert mask.shape == (512, 512, 20)
    nz = np.argwhere(mask > 0)
    assert len(nz) > 1000 and set(np.unique(nz[:, 2])) <= set(range(4, 16))
    assert len(np.unique(nz[:, 2])) >= 6

    # the job is segloop's, from a DICOM source
    info = c.datastore()["objects"][series]["image"]["info"]
    job = httpx.get(f"{srv.url}/api/v1/jobs/{info['segloop_job']}").json()
    assert job["source_format"] == "dicom" and job["source_shape"] == [512, 512, 20]

    # OHIF saves the label as label.bin: one byte per voxel, first index fastest
    lab = (mask > 0).astype(np.uint8)
    r = httpx.put(f"{srv.url}/monailabel/datastore/label", params={"image": series},
                  files={"params": (None, json.dumps({"label_info": [{"name": "liver",
                                                                      "idx": 1}]})),
                         "label": ("label.bin", lab.tobytes(order="F"),
                                   "application/octet-stream")}, timeout=300)
    assert r.status_code == 200, r.text
    saved = r.json()
    assert saved["datastore_case"]
    seg_uid = saved["SeriesInstanceUID"]

    # the SEG is in Orthanc, refers to the series and holds the same voxels
    dw = DICOMwebClient(orthanc)
    segs = dw.search_for_series(search_filters={"Modality": "SEG"})
    assert [s["0020000E"]["Value"][0] for s in segs] == [seg_uid]
    inst = dw.retrieve_series(study, seg_uid)
    assert len(inst) == 1
    seg = inst[0]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series
    assert seg.SegmentSequence[0].SegmentLabel == "liver"
    assert int(np.asarray(seg.pixel_array).astype(bool).sum()) == int(lab.sum())

    # the series is labeled now: nothing left to offer
    assert c.next_sample("first", {}) == {}
    assert c.datastore()["objects"][series]["labels"]["final"]["info"]["SeriesInstanceUID"] \
        == seg_uid


def test_unknown_series_and_server_down(orthanc: str, serve: Any, tmp_path: Path) -> None:
    srv: Server = serve(SEGLOOP_DICOMWEB_URL=orthanc)
    r = httpx.post(f"{srv.url}/monailabel/infer/classic", params={"image": "1.2.3.4"},
                   files={"params": (None, json.dumps({"foreground": [[1, 1, 1]]}))},
                   timeout=120)
    assert r.status_code == 404
    assert "SeriesInstanceUID" in r.json()["detail"] and orthanc in r.json()["detail"]

    down: Server = serve(tmp_path / "home2",
                         SEGLOOP_DICOMWEB_URL=f"http://127.0.0.1:{free_port()}/dicom-web")
    r = httpx.post(f"{down.url}/monailabel/infer/classic", params={"image": "1.2.3.4"},
                   files={"params": (None, json.dumps({"foreground": [[1, 1, 1]]}))},
                   timeout=120)
    assert r.status_code == 502
    assert "cannot reach the DICOMweb server" in r.json()["detail"]
    # /info/ still answers (Slicer and OHIF connect through it)
    assert httpx.get(f"{down.url}/monailabel/info/", timeout=120).status_code == 200
