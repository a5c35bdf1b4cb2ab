"""``segloop eval --images`` with engines that are not SAM 2-family models: ``medsam`` (a tiny
random-weight checkpoint in MedSAM's layout) and ``classic`` segment each image through their
own 2D path with the truth's exact box; the table, the CSV, the figures and the base vs
fine-tuned lines come out as for SAM 2 models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segloop.cli import main
from segloop.engines import get_engine
from segloop.engines.image2d import segment_image
from segloop.engines.medsam.testing import install_tiny_medsam
from segloop.io.image2d import load_image2d
from segloop.types import Prompts

from .synthetic import write_disc_folders


def test_eval_images_with_medsam_and_classic(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    install_tiny_medsam("medsam", image_size=64)
    images, masks = write_disc_folders(tmp_path / "d", 1, 3)
    out = tmp_path / "ev"
    rc = main(["eval", "--images", str(images), "--masks", str(masks), "--engine", "medsam",
               "--engine", "classic", "--out", str(out), "-q"])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:2] == ["medsam", "3"] and lines[2].split()[:2] == ["classic", "3"]
    assert lines[4].startswith("Base model (medsam) mean IoU: ")
    rows = (out / "per_image_2d.csv").read_text().splitlines()[1:]
    assert len(rows) == 6 and len(list((out / "figures").glob("*.png"))) == 3
    # classic's row is exactly what segment_image gives with the truth's box
    name = sorted(p.name for p in (images / "val").iterdir())[0]
    truth = np.asarray(load_image2d(masks / "val" / Path(name).with_suffix(".png").name).pixels) > 0
    ys, xs = np.nonzero(truth)
    pred = segment_image(get_engine("classic"), load_image2d(images / "val" / name),
                         Prompts.make(box=[xs.min(), ys.min(), xs.max(), ys.max()]))
    iou = (pred & truth).sum() / (pred | truth).sum()
    row = next(r for r in rows if r.startswith("classic,") and Path(name).stem in r)
    assert float(row.split(",")[2]) == pytest.approx(iou, abs=1e-6)
    assert iou > 0.8  # a bright disc on a plain background
