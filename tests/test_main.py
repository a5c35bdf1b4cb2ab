"""``python -m segloop`` runs the same command line as the ``segloop`` script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run([sys.executable, "-m", "segloop", *args], capture_output=True,
                          text=True, env=env, timeout=120, check=False)


def test_python_dash_m_prints_the_commands() -> None:
    r = _run("--help")
    assert r.returncode == 0, r.stderr
    assert "segment" in r.stdout and "serve" in r.stdout


def test_python_dash_m_passes_the_exit_status(tmp_path: Path) -> None:
    r = _run("info", str(tmp_path / "missing.nii.gz"))
    assert r.returncode != 0
    assert "missing.nii.gz" in r.stderr
    assert "Traceback" not in r.stderr
