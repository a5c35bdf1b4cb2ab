"""Running the ``segloop`` console script as a user does, and checking its one-line errors.

Shared by the command tests (``test_segment.py``, ``test_segment2d.py``); imported by name
(``from cli.clihelpers import run``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["SEGLOOP", "assert_clean_error", "run"]

SEGLOOP = str(Path(sys.executable).with_name("segloop"))


def run(*args: str | Path | int) -> subprocess.CompletedProcess[str]:
    """``segloop ARGS...`` with its output captured (UTF-8, 120 s at most)."""
    return subprocess.run([SEGLOOP, *map(str, args)], capture_output=True, text=True,
                          encoding="utf-8", timeout=120)


def assert_clean_error(res: subprocess.CompletedProcess[str], match: str) -> None:
    """The command failed with exactly one ``segloop: error:`` line containing ``match``, no traceback."""
    assert res.returncode != 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("segloop: error:")]
    assert len(lines) == 1, res.stderr
    assert match.lower() in lines[0].lower(), lines[0]
