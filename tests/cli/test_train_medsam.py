"""``segloop train --model medsam --images DIR --masks DIR``: MedSAM trains straight from the 2D
folders ``segloop eval --images/--masks`` reads (no ``segloop export npy`` step), holds out
``val/`` as given, and the run serves as ``medsam@RUN``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segloop.engines.medsam.testing import install_tiny_medsam
from segloop.types import Prompts


def run_cli(*args: object) -> int:
    from segloop.cli import main
    from segloop.engines.registry import clear_engines

    try:
        return main([str(a) for a in args])
    finally:
        clear_engines()


def _folders(root: Path, split: str, n: int, rgb: bool) -> None:
    rng = np.random.default_rng(len(split))
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "masks" / split).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        h, w = 50 + 3 * i, 70 - 2 * i  # not square and not the model's size
        gt = np.zeros((h, w), np.uint8)
        gt[8 + 2 * i : 30 + 2 * i, 10 + 3 * i : 40 + 3 * i] = 255
        grey = np.clip(60 + 0.6 * gt + rng.normal(0, 8, gt.shape), 0, 255).astype(np.uint8)
        img = np.stack([grey, grey // 2, 255 - grey], -1) if rgb else grey
        Image.fromarray(img).save(root / "images" / split / f"{split}{i}.png")
        Image.fromarray(gt).save(root / "masks" / split / f"{split}{i}.png")


def test_train_medsam_from_2d_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    install_tiny_medsam("medsam", image_size=64)
    _folders(tmp_path, "train", 4, rgb=True)
    _folders(tmp_path, "val", 2, rgb=False)
    out = tmp_path / "polyp1"
    rc = run_cli("train", "--model", "medsam", "--images", tmp_path / "images", "--masks",
                 tmp_path / "masks", "--epochs", 2, "--batch-size", 2, "--lr", "1e-3", "--out", out,
                 "--threads", 1)
    assert rc == 0
    captured = capsys.readouterr()
    assert "(val0, val1)" in captured.out  # val/ held out as given, validated each epoch
    assert "6 image(s)/slice(s)" in captured.err
    imgs = sorted(p.name for p in (out / "npy" / "imgs").glob("*.npy"))
    assert imgs == [f"{s}{i}-000.npy" for s, n in (("train", 4), ("val", 2)) for i in range(n)]
    img = np.load(out / "npy" / "imgs" / "train1-000.npy")
    gt = np.load(out / "npy" / "gts" / "train1-000.npy")
    assert img.shape == (64, 64, 3) and gt.shape == (64, 64) and set(np.unique(gt)) == {0, 1}
    assert not np.allclose(img[..., 0], img[..., 1])  # RGB reached the model as RGB
    ck = torch.load(out / "medsam_model_best.pth", weights_only=True)
    assert "image_encoder.blocks.0.norm1.weight" in ck["model"]
    from segloop.engines.registry import clear_engines, get_engine

    try:
        mask = get_engine("medsam@polyp1").segment_image(
            np.zeros((50, 70), np.uint8) + 50, Prompts(box=(10, 10, 40, 40)))
        assert mask.shape == (50, 70)
    finally:
        clear_engines()


def test_train_medsam_refuses_two_sources_and_half_a_pair(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    install_tiny_medsam("medsam", image_size=64)
    _folders(tmp_path, "train", 1, rgb=False)
    assert run_cli("train", "--model", "medsam", "--images", tmp_path / "images", "--out",
                   tmp_path / "o") != 0
    assert "takes both --images DIR and --masks DIR" in capsys.readouterr().err
    assert run_cli("train", "--model", "medsam", "--images", tmp_path / "images", "--masks",
                   tmp_path / "masks", "--manifest", tmp_path / "m.csv", "--out", tmp_path / "o") != 0
    assert "needs one data source" in capsys.readouterr().err
