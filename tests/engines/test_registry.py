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


def test_engines_that_cannot_run_here_are_listed_with_the_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The viewer greys out these engines (issue 15): an empty home has no weights, so every
    weight-backed engine is listed with a reason, classic never, fine-tuned runs never."""
    from segloop.engines.registry import engine_unavailable

    monkeypatch.setenv("SEGLOOP_HOME", str(tmp_path))
    _saved_run(tmp_path / "models", "classic@run1", "classic")
    names = engine_catalogue()
    out = engine_unavailable(names)
    assert "classic" not in out and "classic@run1" not in out
    assert set(out) <= set(names)
    for name in {"sam2.1-tiny", "medsam2", "sammed3d"} & set(names):
        assert "weights" in out[name], out[name]
