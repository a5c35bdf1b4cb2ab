"""MONAI Label sessions from several files (a DICOM series, a header and its data file) and the
ROI cut of the stored version, with the real client (monailabel==0.8.5) against `segloop serve`."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
import pytest

from realdata import SHARED_DATA, need_shared_data

from .conftest import Server, blob_volume, write_lps_nifti

client_mod = pytest.importorskip("monailabel.client.client",
                                 reason="monailabel==0.8.5 (--no-deps) is a [dev] test tool")
MONAILabelClient: Any = client_mod.MONAILabelClient
Utils: Any = client_mod.MONAILabelUtils

SERIES = SHARED_DATA / "totalseg" / "example_ct_dicom"


def _stored(srv: Server, job: str) -> np.ndarray:
    """The job's current version as segloop's own API exports it (the upload's grid)."""
    r = httpx.get(f"{srv.url}/api/v1/jobs/{job}/result", params={"format": "nii.gz"})
    assert r.status_code == 200, r.text
    img: Any = nib.Nifti1Image.from_bytes(gzip.decompress(r.content))
    return np.asarray(img.dataobj)


def test_session_from_a_dicom_series_uses_every_file(serve: Any, tmp_path: Path) -> None:
    need_shared_data()
    files = sorted(SERIES.iterdir())
    assert len(files) == 20
    srv: Server = serve()
    # the client's own multipart upload, with every file of the series as a "files" part
    status, body, _ = Utils.http_upload("PUT", f"{srv.url}/monailabel", "/session/", {},
                                        [str(f) for f in files])
    assert status == 200, body
    sid = json.loads(body)["session_id"]
    c = MONAILabelClient(f"{srv.url}/monailabel", tmpdir=str(tmp_path))
    # liver, in the series' own IJK (columns, rows, slices)
    params = {"roi": [[110, 275], [195, 370], [6, 13]], "foreground": [[190, 280, 10]],
              "result_extension": ".nii.gz"}
    out, res = c.infer("classic", sid, params, session_id=sid)
    mask = np.asarray(nib.load(out).dataobj)
    assert mask.shape == (512, 512, 20)  # all 20 slices, not the first file alone
    nz = np.argwhere(mask > 0)
    assert len(nz) > 1000
    assert set(np.unique(nz[:, 2])) == set(range(6, 14))
    job = httpx.get(f"{srv.url}/api/v1/jobs/{res['segloop']['job_id']}").json()
    assert job["source_format"] == "dicom"


def test_session_from_header_and_data_file(serve: Any, tmp_path: Path) -> None:
    import SimpleITK as sitk

    vol = blob_volume()
    img = sitk.GetImageFromArray(vol.transpose(2, 1, 0))
    img.SetSpacing((0.8, 0.8, 2.5))
    sitk.WriteImage(img, str(tmp_path / "blob.mhd"))  # blob.mhd + blob.raw
    srv: Server = serve()
    status, body, _ = Utils.http_upload("PUT", f"{srv.url}/monailabel", "/session/", {},
                                        [str(tmp_path / "blob.mhd"), str(tmp_path / "blob.raw")])
    assert status == 200, body
    sid = json.loads(body)["session_id"]
    c = MONAILabelClient(f"{srv.url}/monailabel", tmpdir=str(tmp_path))
    out, _ = c.infer("classic", sid, {"foreground": [[24, 18, 8]]}, session_id=sid)
    assert np.asarray(nib.load(out).dataobj).shape == vol.shape


def test_stored_version_is_cut_to_the_roi(serve: Any, tmp_path: Path) -> None:
    srv: Server = serve()
    c = MONAILabelClient(f"{srv.url}/monailabel", tmpdir=str(tmp_path))
    vol = blob_volume()
    write_lps_nifti(tmp_path / "lps.nii.gz", vol)
    sid = c.create_session(str(tmp_path / "lps.nii.gz"))["session_id"]
    # a ROI cutting through the blob (slices 3..13, x 15..33): propagation runs past it
    roi = [30, 18, 27, 10, 6, 9]
    params = {"roi": roi, "foreground": [[24, 18, 8]], "result_extension": ".nii.gz"}
    out, res = c.infer("classic", sid, params, session_id=sid)
    returned = np.asarray(nib.load(out).dataobj)
    inside = np.zeros(vol.shape, bool)
    inside[18:31, 10:28, 6:10] = True
    assert returned.any() and not returned[~inside].any()
    stored = _stored(srv, res["segloop"]["job_id"])
    assert np.array_equal(stored > 0, returned > 0)
    # a click more refines the clipped object; the stored version stays what is returned
    out2, res2 = c.infer("classic", sid, {**params, "foreground": [[24, 18, 8], [22, 17, 7]]},
                         session_id=sid)
    assert res2["segloop"]["mode"] == "refine"
    returned2 = np.asarray(nib.load(out2).dataobj)
    assert not returned2[~inside].any()
    assert np.array_equal(_stored(srv, res2["segloop"]["job_id"]) > 0, returned2 > 0)
    # without a ROI the same click reaches past it: the cut is what keeps the version inside
    sid2 = c.create_session(str(tmp_path / "lps.nii.gz"))["session_id"]
    out3, _ = c.infer("classic", sid2, {"foreground": [[24, 18, 8]]}, session_id=sid2)
    assert np.asarray(nib.load(out3).dataobj)[~inside].any()
