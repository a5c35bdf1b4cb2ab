"""MONAI Label's own Python client (monailabel==0.8.5, the code 3D Slicer's module is built on)
against a live `segloop serve`: info, sessions with an LPS-stored NIfTI, deepgrow infer with a
ROI and clicks, datastore upload + final label -> reviewed case, active learning, training,
and API keys."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
import pytest

from .conftest import Server, add_user, blob_volume, write_lps_nifti

client_mod = pytest.importorskip("monailabel.client.client",
                                 reason="monailabel==0.8.5 (--no-deps) is a [dev] test tool")
MONAILabelClient: Any = client_mod.MONAILabelClient
ClientError: Any = client_mod.MONAILabelClientException


def test_info_session_infer_on_lps_nifti(serve: Any, tmp_path: Path) -> None:
    srv: Server = serve()
    c = MONAILabelClient(f"{srv.url}/monailabel", tmpdir=str(tmp_path))
    info = c.info()
    assert "config" not in info
    assert info["models"]["classic"]["type"] == "deepgrow"
    assert info["models"]["classic"]["dimension"] == 3
    assert info["models"]["classic_2d"]["dimension"] == 2

    vol = blob_volume()
    img_path = tmp_path / "lps.nii.gz"
    affine = write_lps_nifti(img_path, vol)
    assert "".join(nib.aff2axcodes(affine)) == "LPS"
    sess = c.create_session(str(img_path))
    sid = sess["session_id"]
    assert c.get_session(sid)["name"] == sid

    # ROI in the file's IJK indices as 3D Slicer sends it ([i0, i1, j0, j1, k0, k1], RAS
    # corners mapped to IJK: on an LPS file the i and j pairs arrive reversed)
    roi = [34, 13, 27, 10, 4, 12]
    params = {"roi": roi, "foreground": [[24, 18, 8], [25, 19, 10]], "background": [],
              "result_extension": ".nii.gz"}
    out, res = c.infer("classic", sid, params, session_id=sid)
    assert res["segloop"]["mode"] == "new"
    assert res["segloop"]["version"] == 1, "a new ROI is one segment task, one version"
    mask_img: Any = nib.load(out)
    mask = np.asarray(mask_img.dataobj)
    assert mask.shape == vol.shape
    np.testing.assert_allclose(mask_img.affine, affine, atol=1e-4)
    nz = np.argwhere(mask > 0)
    assert len(nz) > 100
    lo, hi = nz.min(axis=0), nz.max(axis=0)
    assert (lo >= [13, 10, 4]).all() and (hi <= [34, 27, 12]).all(), (lo, hi)
    assert len(np.unique(nz[:, 2])) >= 4  # several slices
    truth = ((np.indices(vol.shape)[0] - 24) / 9.0) ** 2 + \
        ((np.indices(vol.shape)[1] - 18) / 7.0) ** 2 + ((np.indices(vol.shape)[2] - 8) / 5.0) ** 2 <= 1
    dice = 2 * (truth & (mask > 0)).sum() / (truth.sum() + (mask > 0).sum())
    assert dice > 0.7, dice

    # one more click: only it runs (a refinement), as NRRD uncompressed in uint16
    params2 = {**params, "background": [[30, 25, 6]], "result_extension": ".nrrd",
               "result_dtype": "uint16", "result_compress": False}
    out2, res2 = c.infer("classic", sid, params2, session_id=sid)
    assert res2["segloop"]["mode"] == "refine"
    import SimpleITK as sitk

    m2 = sitk.ReadImage(out2)
    assert m2.GetPixelID() == sitk.sitkUInt16
    assert sitk.GetArrayFromImage(m2).transpose(2, 1, 0).shape == vol.shape

    # json only, and a 2D variant: one slice
    r = httpx.post(f"{srv.url}/monailabel/infer/classic_2d", params={"image": sid,
                   "session_id": sid, "output": "json"},
                   files={"params": (None, json.dumps({"foreground": [[24, 18, 8]]}))})
    assert r.status_code == 200, r.text
    assert r.json()["segloop"]["voxels"] > 0
    # the object started over (clear + one slice) as one more version, not two
    assert r.json()["segloop"]["version"] == res2["segloop"]["version"] + 1

    # the interaction is segloop jobs and versions, visible through the REST API
    job = res["segloop"]["job_id"]
    versions = httpx.get(f"{srv.url}/api/v1/jobs/{job}/versions").json()
    assert {v["source"] for v in versions} >= {"segment", "refine"}

    # an unknown session: 404, so Slicer uploads again
    r = httpx.get(f"{srv.url}/monailabel/session/nope")
    assert r.status_code == 404


def test_session_expires(serve: Any, tmp_path: Path) -> None:
    srv: Server = serve(SEGLOOP_PROTOCOL_IDLE_SECONDS="1")
    c = MONAILabelClient(f"{srv.url}/monailabel", tmpdir=str(tmp_path))
    write_lps_nifti(tmp_path / "a.nii.gz", blob_volume())
    sid = c.create_session(str(tmp_path / "a.nii.gz"))["session_id"]
    time.sleep(1.6)
    with pytest.raises(ClientError) as e:
        c.get_session(sid)
    assert e.value.status_code == 404


def test_datastore_label_activelearning_train(serve: Any, tmp_path: Path) -> None:
    srv: Server = serve()
    c = MONAILabelClient(f"{srv.url}/monailabel", tmpdir=str(tmp_path))
    vol = blob_volume()
    for name in ("case_b", "case_a"):
        write_lps_nifti(tmp_path / f"{name}.nii.gz", vol)
        assert c.upload_image(str(tmp_path / f"{name}.nii.gz"), name) == {"image": name}
    assert c.next_sample("first", {})["id"] == "case_a"
    assert c.next_sample("segloop", {})["id"] == "case_b"  # both untouched: oldest upload
    assert c.next_sample("random", {})["id"] in ("case_a", "case_b")

    # the label on the image's own (LPS) grid, saved final -> a reviewed datastore case
    i, j, k = np.indices(vol.shape)
    lab = ((((i - 24) / 9.0) ** 2 + ((j - 18) / 7.0) ** 2 + ((k - 8) / 5.0) ** 2) <= 1)
    lab_path = tmp_path / "label.nii.gz"
    write_lps_nifti(lab_path, lab.astype(np.uint8))
    res = c.save_label("case_a", str(lab_path), tag="final",
                       params={"label_info": [{"name": "blob", "idx": 1}]})
    case = res["datastore_case"]
    home = srv.home
    manifest = (home / "datastore" / "manifest.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(manifest)))
    assert [r["structure"] for r in rows] == ["blob"]
    saved: Any = nib.load(str(home / "datastore" / case / "label.nii.gz"))
    assert int(np.asarray(saved.dataobj).sum()) == int(lab.sum())
    assert json.loads((home / "datastore" / case / "meta.json").read_text(encoding="utf-8"))["reviewed_by"]

    ds = c.datastore()
    assert "final" in ds["objects"]["case_a"]["labels"]
    stats = httpx.get(f"{srv.url}/monailabel/datastore/", params={"output": "stats"}).json()
    assert stats["completed"] == 1 and stats["total"] == 2
    train = httpx.get(f"{srv.url}/monailabel/datastore/", params={"output": "train"}).json()
    assert len(train) == 1 and Path(train[0]["label"]).exists()
    # the downloaded label is back on the image's grid
    got = c.download_label("case_a", "final")
    g: Any = nib.load(got)
    assert np.array_equal(np.asarray(g.dataobj) > 0, lab)

    # case_a is labeled: it is no longer offered; then nothing is left
    assert c.next_sample("first", {})["id"] == "case_b"
    c.save_label("case_b", str(lab_path), tag="final")
    assert c.next_sample("first", {}) == {}

    # training: idle -> non-200, start (a child `segloop train`), running, stop
    assert c.train_status(check_if_running=True) is False
    with pytest.raises(ClientError):
        c.train_start("classic", {})  # nothing to train in a weights-free engine
    started = c.train_start("medsam2", {"smoke": True, "max_epochs": 1})
    assert started["status"] == "RUNNING"
    assert c.train_status(check_if_running=True) is True
    stopped = c.train_stop()
    assert stopped["stopped"] is True
    assert c.train_status(check_if_running=True) is False

    # a run still going when the server stops is stopped with it
    c.train_start("medsam2", {"smoke": True, "name": "orphan"})
    srv.stop()
    import psutil

    runs = str(srv.home / "runs" / "orphan")
    time.sleep(0.5)
    left = [p for p in psutil.process_iter(["cmdline"]) if runs in " ".join(p.info["cmdline"] or [])]
    assert left == []


def test_api_keys(serve: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    key = add_user(home, "rita", "reviewer")
    ann = add_user(home, "ann", "annotator")
    srv: Server = serve(home, SEGLOOP_REQUIRE_API_KEYS="true")
    c = MONAILabelClient(f"{srv.url}/monailabel", tmpdir=str(tmp_path))
    assert c.auth_enabled() is True
    with pytest.raises(ClientError) as e:
        c.info()
    assert e.value.status_code == 401
    with pytest.raises(ClientError):
        c.auth_token("rita", "sl_wrong")
    tok = c.auth_token("rita", key)
    c.update_auth(tok)
    assert c.auth_valid_token() is True
    assert "classic" in c.info()["models"]
    write_lps_nifti(tmp_path / "a.nii.gz", blob_volume())
    assert c.upload_image(str(tmp_path / "a.nii.gz"), "a") == {"image": "a"}
    # an annotator may not mark a label final (that is a review)
    c2 = MONAILabelClient(f"{srv.url}/monailabel", tmpdir=str(tmp_path))
    c2.update_auth(c2.auth_token("ann", ann))
    write_lps_nifti(tmp_path / "b.nii.gz", blob_volume())
    c2.upload_image(str(tmp_path / "b.nii.gz"), "b")
    lab = tmp_path / "l.nii.gz"
    write_lps_nifti(lab, (blob_volume() > 150).astype(np.uint8))
    with pytest.raises(ClientError):
        c2.save_label("b", str(lab), tag="final")
    assert c2.save_label("b", str(lab), tag="draft")["version"] == 1
    # an annotator cannot take over another user's image id, nor see that image
    with pytest.raises(ClientError):
        c2.upload_image(str(tmp_path / "b.nii.gz"), "a")
    assert "a" not in c2.datastore()["objects"]
