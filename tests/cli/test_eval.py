"""``segloop eval`` through the installed console script and through ``segloop.cli.main``."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from segloop.cli import main
from segloop.engines.registry import engine_names


def _segloop() -> str:
    exe = Path(sys.executable).parent / "segloop"
    found = str(exe) if exe.is_file() else shutil.which("segloop")
    if not found:
        pytest.skip("the segloop console script is not installed (pip install -e .)")
    return found


def test_console_script_with_classic(synthetic_manifest: Path, tmp_path: Path) -> None:
    if "classic" not in engine_names():
        pytest.skip("the classic engine is not registered")
    out = tmp_path / "rep"
    proc = subprocess.run(
        [_segloop(), "eval", str(synthetic_manifest), "--root", str(synthetic_manifest.parent),
         "--out", str(out), "--clicks", "1", "--quiet"],
        capture_output=True, text=True, encoding="utf-8", timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| classic | 2 |" in proc.stdout
    assert "Dice@1" in proc.stdout
    assert re.search(r"^\d+ click\(s\) lowered a case's Dice by more than 0.002", proc.stdout, re.M)
    assert "eval:" not in proc.stderr  # --quiet: no progress bar
    for name in ("per_click.csv", "summary.md", "summary.json", "dice_vs_clicks.png", "per_case_dice.png",
                 "overlays/ct_blob.png", "overlays/mr_blob.png"):
        assert (out / name).is_file(), name


def test_console_script_bad_manifest_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("case_id,image\na,b\n")
    proc = subprocess.run([_segloop(), "eval", str(bad), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, encoding="utf-8", timeout=60)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("segloop: error:"), proc.stderr
    assert "lacks column" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_main_compares_engines_and_reports_failures(
    synthetic_manifest: Path, eval_engines: dict[str, str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "rep"
    rc = main(["eval", str(synthetic_manifest), "--out", str(out), "--clicks", "1",
               "--engine", eval_engines["threshold"], "--engine", eval_engines["failing"],
               "--no-overlays"])
    cap = capsys.readouterr()
    assert rc == 1  # an engine failed on some case
    assert f"| {eval_engines['threshold']} | 2 |" in cap.out
    assert "2 engine failure(s)" in cap.err and "cannot refine" in cap.err
    assert "eval: 100%" in cap.err  # the progress bar ran to the end
    assert not (out / "overlays").exists()


def test_main_rejects_bad_options(synthetic_manifest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(synthetic_manifest), "--cases", "nope"]) == 2
    assert "unknown case id(s) nope" in capsys.readouterr().err
    assert main(["eval", str(synthetic_manifest), "--clicks", "-1"]) == 2
    assert main(["eval", str(synthetic_manifest), "--engine", "no-such-engine"]) == 2
    assert "unknown engine" in capsys.readouterr().err
