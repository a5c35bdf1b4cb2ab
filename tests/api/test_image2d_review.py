"""Reviewing a 2D job through the API writes a datastore case that MedSAM's training and
``segloop eval`` read: the picture upright (as the engines saw it in the job) and the
reviewed mask on the same pixels. Real file: SAM-6D's RGB scene (shared data)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from segloop.config import Settings
from segloop.engines.medsam.testing import install_tiny_medsam

from .conftest import upload


def _cli(*args: object) -> int:
    from segloop.cli import main
    from segloop.engines.registry import clear_engines

    try:
        return main([str(a) for a in args])
    finally:
        clear_engines()


def test_reviewed_2d_job_trains_medsam_and_evaluates(
        client: TestClient, settings: Settings, data: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    src = data / "sam6d/rgb.png"
    jid = upload(client, src).json()["job_id"]
    mask = np.zeros((480, 640), np.uint8)  # an off-centre, asymmetric reviewed mask
    mask[60:200, 400:620] = 255
    mask[200:260, 400:450] = 255
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="PNG")
    r = client.put(f"/api/v1/jobs/{jid}/mask", content=buf.getvalue(),
                   headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    r = client.post(f"/api/v1/jobs/{jid}/review", json={})
    assert r.status_code == 200, r.text
    ds = settings.datastore_dir
    assert (ds / "manifest.csv").is_file()

    install_tiny_medsam("medsam", image_size=64)
    out = tmp_path / "fromds"
    rc = _cli("train", "--model", "medsam", "--from-datastore", ds, "--epochs", 1, "--out", out,
              "--threads", 1, "-q")
    assert rc == 0, capsys.readouterr().err
    (img_npy,) = sorted((out / "npy" / "imgs").glob("*.npy"))
    gt = np.load(out / "npy" / "gts" / img_npy.name)
    img = np.load(img_npy)
    assert img.shape == (64, 64, 3) and gt.shape == (64, 64)
    assert not np.allclose(img[..., 0], img[..., 2])  # the photo in colour, not its grey stand-in
    # the mask on the picture's own pixels, upright: rows 60-260 of 480, columns 400-620 of 640
    want = np.asarray(Image.fromarray(mask).resize((64, 64), Image.NEAREST)) > 0
    assert (gt > 0).sum() > 0
    assert float(((gt > 0) & want).sum() / ((gt > 0) | want).sum()) > 0.9
    # the picture upright too: the npy image correlates with the photo resized, not a flip
    photo = np.asarray(Image.open(src).convert("L").resize((64, 64), Image.BICUBIC), float)
    grey = img.mean(axis=2)
    assert np.corrcoef(grey.ravel(), photo.ravel())[0, 1] > 0.9
    capsys.readouterr()
    rc = _cli("eval", ds / "manifest.csv", "--engine", "classic", "--out", tmp_path / "ev")
    assert rc == 0, capsys.readouterr().err
