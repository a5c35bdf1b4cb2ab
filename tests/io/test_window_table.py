"""Issue 9 item 11: one CT window table (io.windowing.CT_PRESETS), one validation for the CLI
and the engines, and an engine that ignores the window says so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segloop.errors import InputError
from segloop.io.windowing import CT_PRESETS, CtPreset, check_window, window_bounds

CLI = "import sys; from segloop.cli import main; sys.exit(main(sys.argv[1:]))"


def _segloop(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CLI, *map(str, args)], capture_output=True,
                          text=True, encoding="utf-8", timeout=120)


def test_sam2_engines_use_the_one_table() -> None:
    from segloop.engines.sam2.preprocess import WINDOW_PRESETS, to_uint8_volume

    assert {p.value: lw for p, lw in CT_PRESETS.items()} == WINDOW_PRESETS
    assert CT_PRESETS[CtPreset.SOFT_TISSUE] == CT_PRESETS[CtPreset.ABDOMEN] == (40.0, 400.0)
    assert CT_PRESETS[CtPreset.MEDIASTINUM] == (50.0, 350.0)
    assert window_bounds("liver") == (30.0 - 75.0, 30.0 + 75.0)
    hu = np.linspace(-300, 300, 2 * 2 * 61).reshape(2, 2, 61)
    for name in ("abdomen", "mediastinum", "liver", "40,400"):  # every CLI-valid window works
        assert to_uint8_volume(hu, "CT", check_window(name)).max() == 255


@pytest.mark.parametrize(("given", "normalised"), [
    ("Abdomen", "abdomen"), ("soft-tissue", "soft_tissue"), ("40, 400", "40,400"),
    ("AUTO", "auto"), ("mr", "percentile"),
])
def test_check_window_accepts(given: str, normalised: str) -> None:
    assert check_window(given) == normalised


@pytest.mark.parametrize("bad", ["purple", "40", "40,0", "40,-5", "a,b"])
def test_check_window_refuses(bad: str) -> None:
    with pytest.raises(InputError, match="window"):
        check_window(bad)


@pytest.fixture
def ct(tmp_path: Path) -> Path:
    vol = np.full((24, 24, 6), -100, np.int16)
    vol[6:18, 6:18, 1:5] = 60
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), path)
    return path


def test_classic_says_it_ignores_the_window(ct: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.nii.gz"
    r = _segloop("segment", ct, "--box", 5, 5, 18, 18, "--slice", 3, "--engine", "classic",
                 "--window", "mediastinum", "-o", out)
    assert r.returncode == 0, r.stderr
    assert "engine classic ignores --window mediastinum" in r.stderr
    assert out.exists()
    r = _segloop("segment", ct, "--box", 5, 5, 18, 18, "--slice", 3, "--engine", "classic",
                 "--window", "40,0", "-o", tmp_path / "never.nii.gz")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "width" in r.stderr


def test_engines_list_says_which_apply_the_window() -> None:
    r = _segloop("engines")
    assert r.returncode == 0, r.stderr
    lines = {ln.split("\t")[0].split(" ")[0]: ln for ln in r.stdout.splitlines()}
    assert "ignores --window" in lines["classic"]
    assert "CT window applied" in lines["medsam2"]
