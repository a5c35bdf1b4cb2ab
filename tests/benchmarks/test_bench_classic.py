"""``benchmarks/bench_classic.py`` lists the clicks that lowered a case's Dice (issue 17 asks the
benchmark to report them), and runs the protocol on a written NIfTI case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segloop.eval.protocol import InteractionRun
from segloop.types import Click

from .scripts import load_script, write_case


def test_lowering_clicks_are_those_after_which_dice_fell_beyond_the_tolerance() -> None:
    bc = load_script("bench_classic")
    run = InteractionRun(key_z=3, box=(0, 0, 4, 4),
                         clicks=[Click(1, 1, 2, 1), Click(2, 2, 5, 0), Click(3, 3, 4, 1)])
    dices = [0.70, 0.75, 0.70, 0.699]  # the box, then after each click
    low = bc.lowering_in_run("classic", "case_a", run, dices, 0.002)
    assert [(c.step, c.label, c.z) for c in low] == [(2, 0, 5)]  # -0.001 is within the tolerance
    assert bc._line(low[0]).split() == ["case_a", "click", "2", "(-,", "slice", "5):", "0.750",
                                        "->", "0.700", "(-0.050)"]
    # SAM-Med3D's protocol: the first click is the initial prompt, not a correction
    run2 = InteractionRun(key_z=2, box=(0, 0, 4, 4), initial_clicks=1,
                          clicks=[Click(1, 1, 2, 1), Click(2, 2, 3, 1)])
    low2 = bc.lowering_in_run("sammed3d", "case_b", run2, [0.6, 0.5], 0.002)
    assert [(c.step, c.z, c.before, c.after) for c in low2] == [(1, 3, 0.6, 0.5)]


def test_the_script_reports_dice_and_the_lowering_clicks(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    bc = load_script("bench_classic")
    truth = np.zeros((40, 40, 10), dtype=bool)
    truth[10:30, 12:28, 2:8] = True
    img = np.where(truth, 170.0, 60.0) + np.random.default_rng(3).normal(0, 6, truth.shape)
    manifest = write_case(tmp_path, img, truth, "block")
    assert bc.main([str(manifest), "--clicks", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    row = next(line for line in out if line.startswith("block"))
    assert float(row.split()[1]) > 0.8  # an easy bright block
    assert any(line.startswith("MEAN") for line in out)
    assert any(line.startswith("clicks lowering Dice by more than 0.002:") and
               line.endswith("of 1 cases") for line in out)
