"""``benchmarks/bench_classic_2d.py`` on a generated two-image folder, and the one-object
masks of ``benchmarks/build_dev2d.py`` (the 2D development set's scripts, issue 17)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .scripts import load_script


def _two_images(root: Path) -> None:
    """``root/disc/{images,masks}``: a grey and a colour picture, one bright disc each."""
    rng = np.random.default_rng(1)
    (root / "disc" / "images").mkdir(parents=True)
    (root / "disc" / "masks").mkdir(parents=True)
    rr, cc = np.mgrid[:120, :160]
    for name, rgb in (("grey", False), ("colour", True)):
        truth = (cc - 80) ** 2 + (rr - 60) ** 2 <= 30 ** 2
        img = np.where(truth, 170.0, 70.0) + rng.normal(0, 6, truth.shape)
        px = np.clip(img, 0, 255).astype(np.uint8)
        pic = Image.fromarray(np.stack([px, px // 2, 255 - px], axis=2) if rgb else px)
        pic.save(root / "disc" / "images" / f"{name}.png")
        Image.fromarray(truth.astype(np.uint8) * 255).save(root / "disc" / "masks" / f"{name}.png")


def test_bench_prints_per_image_and_kind_means_and_writes_the_csv(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _two_images(tmp_path / "set")
    out = tmp_path / "rows.csv"
    bench = load_script("bench_classic_2d")
    assert bench.main([str(tmp_path / "set"), "--clicks", "1", "--csv", str(out),
                       "--variant", "off:picture_px=none", "--variant", "on:"]) == 0
    text = capsys.readouterr().out
    assert "on disc" in text and "off ALL images" in text and "per click" in text
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4  # 2 images x 2 variants
    assert all(float(r["box_dice"]) > 0.9 for r in rows)


def test_build_keeps_the_largest_component_as_the_one_object(tmp_path: Path) -> None:
    build = load_script("build_dev2d")
    fg = np.zeros((40, 60), bool)
    fg[5:15, 5:15] = True  # 100 px
    fg[20:35, 30:55] = True  # 375 px: the object
    one = build.largest_component(fg)
    assert one.sum() == 375 and one[25, 40]
    item = build.Item("kind", "pic", "o/r", "c" * 40, "a.png", "b.png",
                      Image.fromarray(np.zeros((40, 60, 3), np.uint8)), fg, "CC0", "t")
    row = build.write_pair(item, tmp_path, max_side=30)  # halved
    mask = np.asarray(Image.open(tmp_path / "kind" / "masks" / "pic.png"))
    assert (row["w"], row["h"], row["orig_w"]) == (30, 20, 60)
    assert mask.shape == (20, 30) and set(np.unique(mask)) == {0, 255}
    assert Image.open(tmp_path / "kind" / "images" / "pic.png").size == (30, 20)
