"""Shared fixtures: the real data folder beside the repo, and an isolated SEGLOOP_HOME."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from realdata import SHARED_DATA, need_shared_data

__all__ = ["SHARED_DATA", "shared_data"]


@pytest.fixture
def shared_data() -> Path:
    """The ../shared/data folder of real volumes; skips the test with a reason when absent."""
    return need_shared_data()


@pytest.fixture(autouse=True)
def _isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Every test gets its own SEGLOOP_HOME so nothing touches the user's cache or jobs."""
    home = tmp_path_factory.mktemp("segloop_home")
    monkeypatch.setenv("SEGLOOP_HOME", str(home))
    yield home
