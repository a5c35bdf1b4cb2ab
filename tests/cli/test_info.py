"""``segloop info`` through the argparse handler (the lead wires it into SUBCOMMANDS)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segloop.cli import info
from segloop.errors import SegloopError

WriteSeries = Callable[..., list[Path]]


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    info.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_info_prints_geometry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "x.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 5), np.int16) - 1000, np.diag([-1, 1, 2, 1])), str(p))
    assert _run(["info", str(p)]) == 0
    out = capsys.readouterr().out
    assert "nifti" in out and "3x4x5" in out and "LAS" in out and "CT (guess" in out


def test_info_lists_series(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dicom_series: WriteSeries
) -> None:
    dicom_series(tmp_path / "d" / "a", n=2, series_uid="1.2.9.1")
    dicom_series(tmp_path / "d" / "b", n=3, series_uid="1.2.9.2")
    assert _run(["info", str(tmp_path / "d")]) == 2
    out = capsys.readouterr().out
    assert "1.2.9.1" in out and "1.2.9.2" in out and "--series" in out
    assert _run(["info", str(tmp_path / "d"), "--series", "1.2.9.2"]) == 0
    assert "dicom" in capsys.readouterr().out


def test_info_bad_file_is_a_segloop_error(tmp_path: Path) -> None:
    (tmp_path / "bad.nii").write_text("nope")
    with pytest.raises(SegloopError):
        _run(["info", str(tmp_path / "bad.nii")])
