"""The classic engine's frozen options record: checked once, when the engine is made."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from segloop.engines.classic import ClassicEngine, ClassicOptions
from segloop.errors import EngineError
from segloop.io.volume import Volume


def _volume() -> Volume:
    return Volume(np.zeros((8, 8, 3), dtype=np.float32), np.eye(4), "npz")


def test_defaults_are_the_benchmarked_settings() -> None:
    opts = ClassicEngine().options
    assert opts == ClassicOptions()
    assert (opts.area_cap, opts.neck_open, opts.min_key_lr) == (1.2, 0.25, -0.5)


def test_options_reach_the_session_and_cannot_change() -> None:
    engine = ClassicEngine(area_cap=None, ring_mm=4)
    session = engine.open(_volume())
    assert session.options.area_cap is None
    assert session.options.ring_mm == 4.0 and isinstance(session.options.ring_mm, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        session.options.ring_mm = 1.0  # type: ignore[misc]


def test_none_only_where_an_option_can_be_disabled() -> None:
    with pytest.raises(EngineError, match="ring_mm takes a number"):
        ClassicEngine(ring_mm=None)
    with pytest.raises(EngineError, match="ring_mm takes a number"):
        ClassicEngine(ring_mm="none")  # type: ignore[arg-type]
    # the command line's `--engine-opt tight_box=none` arrives as a string
    assert ClassicEngine(tight_box="None").options.tight_box is None  # type: ignore[arg-type]


def test_a_value_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(EngineError, match="area_cap takes a number or None"):
        ClassicEngine(area_cap="big")  # type: ignore[arg-type]


def test_unknown_option_names_the_known_ones() -> None:
    with pytest.raises(EngineError, match="known: adapt, area_cap"):
        ClassicEngine(bogus=1.0)
