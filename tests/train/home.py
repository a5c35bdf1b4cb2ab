"""A private SEGLOOP_HOME (model cache, datastore) per training test, as an autouse fixture that
tests/train/conftest.py and tests/cli/test_train.py import."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["segloop_home"]


@pytest.fixture(autouse=True)
def segloop_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """SEGLOOP_HOME in tmp_path, and run-time registry entries removed afterwards."""
    from segloop.models.registry import model_names, unregister_model

    home = tmp_path / "home"
    monkeypatch.setenv("SEGLOOP_HOME", str(home))
    before = set(model_names())
    yield home
    for name in set(model_names()) - before:
        unregister_model(name)

