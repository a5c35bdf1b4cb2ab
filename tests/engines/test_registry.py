"""The engine catalogue: registered engines, then fine-tuned runs (ENGINE@RUN) of known engines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segloop.engines.registry import engine_catalogue, engine_names


def _saved_run(models: Path, name: str, engine: str) -> None:
    d = models / name
    d.mkdir(parents=True)
    meta = {"trained": {"engine": engine, "base_model": "base"}, "config": {"arch": "x"}}
    (d / "meta.json").write_text(json.dumps(meta))


def test_catalogue_lists_engines_then_runs_of_known_engines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGLOOP_HOME", str(tmp_path))
    models = tmp_path / "models"
    _saved_run(models, "classic@run2", "classic")
    _saved_run(models, "classic@run1", "classic")
    _saved_run(models, "nosuchengine@run1", "nosuchengine")  # its engine is not registered
    (models / "plain-model").mkdir()  # a cached model that is not a run
    names = engine_names()
    assert "classic" in names
    assert engine_catalogue() == [*names, "classic@run1", "classic@run2"]


def test_catalogue_without_a_models_folder_is_the_registry(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGLOOP_HOME", str(tmp_path / "empty"))
    assert engine_catalogue() == engine_names()
