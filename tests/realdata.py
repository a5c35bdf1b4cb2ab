"""Where the real data beside the repository lives (``../shared``), for tests that read it.

The one place that builds these paths: tests take the ``shared_data`` fixture
(tests/conftest.py) or, for module-level paths, ``SHARED_DATA`` and ``need_shared_data()``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

__all__ = ["SHARED_DATA", "SHARED_FIXTURES", "need_shared_data"]

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
SHARED_FIXTURES = (REPO / ".." / "shared" / "fixtures").resolve()


def need_shared_data() -> Path:
    """../shared/data; skips the calling test with a reason when it is absent."""
    if not (SHARED_DATA / "cases.csv").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA} (clone with ../shared beside the repo)")
    return SHARED_DATA
