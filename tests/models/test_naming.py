"""The one ENGINE@RUN parser (segloop.models.naming), as the registries and the API use it."""

from __future__ import annotations

import pytest

from segloop.errors import InputError, SegloopError
from segloop.models.naming import ModelVersion, parse_model_version, run_model_name
from segloop.models.registry import get_spec


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("medsam2@run1", ModelVersion("medsam2", "run1")),
        ("sam2.1-tiny@r.base", ModelVersion("sam2.1-tiny", "r.base")),
        ("a@b@c", ModelVersion("a", "b@c")),
        ("medsam2", None),
        ("medsam2@", None),
    ],
)
def test_parse(text: str, want: ModelVersion | None) -> None:
    assert parse_model_version(text) == want


def test_name_round_trips() -> None:
    name = run_model_name("medsam2", "run-1")
    assert name == "medsam2@run-1"
    version = parse_model_version(name)
    assert version is not None and version.name == name


def test_unusable_run_names_are_refused() -> None:
    with pytest.raises(InputError, match="run name"):
        run_model_name("medsam2", "../x")


def test_an_unknown_version_is_an_actionable_error() -> None:
    with pytest.raises(SegloopError, match="unknown model 'medsam2@nope'"):
        get_spec("medsam2@nope")
