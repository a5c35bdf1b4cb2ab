"""``segloop eval --click-protocol sammed3d``: SAM-Med3D's random clicks, beside segloop's protocol."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from segloop.cli import main
from segloop.engines.registry import get_engine
from segloop.eval.protocol import (
    SAMMED3D_SEED,
    ClickProtocol,
    random_error_click,
    run_interaction,
)
from segloop.io.volume import Volume


def test_random_error_click_draws_uniformly_from_the_error_region() -> None:
    truth = np.zeros((6, 5, 4), bool)
    truth[1:4, 1:4, 1:3] = True
    pred = np.zeros_like(truth)
    pred[1:4, 1:4, 1] = True  # missed: the 9 voxels of z = 2
    pred[5, 4, 3] = True  # spurious: one voxel
    rng = np.random.RandomState(SAMMED3D_SEED)
    counts: dict[tuple[int, int, int], int] = {}
    for _ in range(2000):
        c = random_error_click(pred, truth, rng)
        xyz = (c.x, c.y, c.z)
        assert c.label == (1 if truth[xyz] else 0), c
        assert truth[xyz] != pred[xyz], c  # always in the error region
        counts[xyz] = counts.get(xyz, 0) + 1
    assert len(counts) == 10  # every error voxel is drawn...
    assert max(counts.values()) < 1.5 * 200 and min(counts.values()) > 0.5 * 200  # ...uniformly
    # no error left: a random target voxel, positive (as SAM-Med3D's sampler)
    c = random_error_click(truth, truth, np.random.RandomState(0))
    assert truth[c.x, c.y, c.z] and c.label == 1
    # the same seed gives the same click: every engine starts from the same first click
    a = random_error_click(np.zeros_like(truth), truth, np.random.RandomState(SAMMED3D_SEED))
    b = random_error_click(np.zeros_like(truth), truth, np.random.RandomState(SAMMED3D_SEED))
    assert a == b and a.label == 1


def test_sammed3d_engine_runs_the_protocol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGLOOP_HOME", str(tmp_path / "home"))
    from segloop.engines.sammed3d.testing import install_tiny_weights

    install_tiny_weights()
    sp = (1.5, 1.5, 3.0)
    shape = (40, 36, 14)
    truth = np.zeros(shape, bool)
    truth[12:28, 11:25, 4:11] = True
    data = np.where(truth, 200.0, 20.0) + np.random.default_rng(0).normal(0, 10, shape)
    vol = Volume(data=data.astype(np.float32), affine=np.diag([*sp, 1.0]), source_format="npz")
    run = run_interaction(get_engine("sammed3d"), vol, truth, clicks=2,
                          protocol=ClickProtocol.SAMMED3D)
    assert run.initial_clicks == 1 and len(run.clicks) == 3 and len(run.masks) == 3
    first = run.clicks[0]
    assert first.label == 1 and truth[first.x, first.y, first.z] and run.key_z == first.z
    assert run.click_of_step(0) == first and run.click_of_step(2) == run.clicks[2]
    assert all(m.shape == shape for m in run.masks)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_cli_click_protocol_option(synthetic_manifest: Path, eval_engines: dict[str, str],
                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    eng = eval_engines["threshold"]
    for i, proto in enumerate(("sammed3d", "segloop", "sammed3d")):
        out = tmp_path / f"{proto}{i}"
        rc = main(["eval", str(synthetic_manifest), "--out", str(out), "--clicks", "2", "--engine",
                   eng, "--no-overlays", "--quiet", "--click-protocol", proto])
        assert rc == 0, capsys.readouterr().err
        assert json.loads((out / "summary.json").read_text())["click_protocol"] == proto
    text = (tmp_path / "sammed3d0" / "summary.md").read_text()
    assert "Protocol: SAM-Med3D's" in text
    sam = _rows(tmp_path / "sammed3d0" / "per_click.csv")
    seg = _rows(tmp_path / "segloop1" / "per_click.csv")
    keys = ("case_id", "click", "click_x", "click_y", "click_z", "click_label", "dice")
    again = _rows(tmp_path / "sammed3d2" / "per_click.csv")  # seeded: the same clicks and scores
    assert [[r[k] for k in keys] for r in sam] == [[r[k] for k in keys] for r in again]
    assert len(sam) == len(seg) == 2 * 3
    for r in sam:  # every step of SAM-Med3D's protocol is a click; the first one positive
        assert int(r["click_x"]) >= 0 and r["click_label"] in ("0", "1")
        if r["click"] == "0":
            assert r["click_label"] == "1"
    assert all(r["click_x"] == "-1" for r in seg if r["click"] == "0")  # segloop starts with a box
    with pytest.raises(SystemExit):
        main(["eval", str(synthetic_manifest), "--click-protocol", "nnunet"])
    assert "invalid choice: 'nnunet'" in capsys.readouterr().err
