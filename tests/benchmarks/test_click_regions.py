"""``benchmarks/click_regions.py``: a click's region is the 3D error component holding it, the
outline layers are the bands ``error_parts.py`` uses, and the script runs the protocol (with
and without the oracle) on a written NIfTI case (issue 17)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segloop.types import Click

from .scripts import load_script, write_case


def test_the_clicked_region_is_the_error_component_holding_the_click() -> None:
    cr = load_script("click_regions")
    truth = np.zeros((30, 30, 6), dtype=bool)
    truth[5:15, 5:15, 1:5] = True
    pred = truth.copy()
    pred[20:24, 20:24, 2:4] = True  # a leak over two slices (32 voxels)
    pred[0:2, 0:2, 0] = True  # another spurious part, apart from it (4 voxels)
    pred[8:12, 8:12, 3] = False  # a hole: missed voxels (16)
    leak = cr.clicked_region(pred, truth, Click(21, 21, 3, 0))
    assert leak.sum() == 32 and leak[20:24, 20:24, 2:4].all() and not leak[0, 0, 0]
    hole = cr.clicked_region(pred, truth, Click(9, 9, 3, 1))
    assert hole.sum() == 16
    with pytest.raises(ValueError, match="not in an error of its sign"):
        cr.clicked_region(pred, truth, Click(9, 9, 3, 0))  # a negative click on a missed voxel


def test_outline_layers_are_the_two_one_voxel_bands() -> None:
    cr = load_script("click_regions")
    truth = np.zeros((20, 20, 3), dtype=bool)
    truth[5:10, 5:10, 1] = True  # 25 voxels: outermost layer 16, layer outside 20
    layers = cr.outline_layers(truth)
    assert int(layers[:, :, 1].sum()) == 16 + 20
    assert not layers[:, :, 0].any() and not layers[:, :, 2].any()
    assert layers[7, 7, 1] == np.False_  # the middle is not in a layer
    assert layers[4, 7, 1] and layers[5, 7, 1]  # just outside, and the outermost layer


def _case(tmp_path: Path) -> Path:
    rng = np.random.default_rng(2)
    xx, yy, zz = np.mgrid[:48, :48, :12]
    truth = ((xx - 24) ** 2 + (yy - 24) ** 2 <= (12 - zz) ** 2) & (zz >= 2) & (zz <= 9)
    # a neighbour of the same brightness touching the cone's side: a leak for the engine
    neighbour = ((xx - 38) ** 2 + (yy - 24) ** 2 <= 16) & (zz >= 2) & (zz <= 9)
    img = np.where(truth | neighbour, 200.0, 50.0) + rng.normal(0, 15, truth.shape)
    return write_case(tmp_path, img, truth, "cone")


def _mean_line(out: list[str]) -> tuple[float, float]:
    (line,) = [x for x in out if x.startswith("MEAN")]
    return float(line.split()[1]), float(line.split()[2])


def test_script_with_and_without_the_oracle(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    cr = load_script("click_regions")
    manifest = _case(tmp_path)
    assert cr.main([str(manifest), "--clicks", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    clicks = [x for x in out if x.startswith("  click")]
    assert 1 <= len(clicks) <= 3
    for line in clicks:
        values = line.split()
        fixed = float(values[values.index("fixed") + 1])
        assert 0.0 <= fixed <= 1.0
    first, last = _mean_line(out)
    assert [x.split()[0] for x in out if x.startswith("cone")] == ["cone"]
    # the oracle sets each click's whole region to the truth: the case ends more right
    assert cr.main([str(manifest), "--clicks", "3", "--oracle", "region"]) == 0
    o_first, o_last = _mean_line(capsys.readouterr().out.splitlines())
    assert o_first == first
    assert o_last > last + 0.01  # 0.950 -> 0.991 when written
    # the case's clicks are all positive: an oracle for negative clicks changes nothing
    assert cr.main([str(manifest), "--clicks", "3", "--oracle", "region",
                    "--oracle-sign", "negative"]) == 0
    assert _mean_line(capsys.readouterr().out.splitlines()) == (first, last)
    # no-harm: the voxels each refinement made wrong go back (clicks 2 and 3 made some)
    assert cr.main([str(manifest), "--clicks", "3", "--oracle", "no-harm"]) == 0
    assert _mean_line(capsys.readouterr().out.splitlines())[1] > last  # 0.9497 -> 0.9510
    # reach 0: only the click's own slice is set right
    assert cr.main([str(manifest), "--clicks", "1", "--oracle", "thick", "--reach", "0"]) == 0
    assert _mean_line(capsys.readouterr().out.splitlines())[0] == first
