"""The task kinds, task states and event types agree with the web viewer's JS constants."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path

import pytest

from segloop.jobs.states import TERMINAL, EventType, TaskKind, TaskState, event_for_state

VIEWER = Path(__file__).resolve().parents[2] / "src/segloop/web/static/tasks.js"  # viewer's tasks


def _js_object(name: str) -> dict[str, str]:
    """The ``KEY: 'value'`` pairs of ``const NAME = Object.freeze({...});`` in tasks.js."""
    text = VIEWER.read_text(encoding="utf-8")
    m = re.search(rf"const {name} = Object\.freeze\(\{{(.*?)\}}\);", text, re.S)
    assert m is not None, f"tasks.js has no `const {name} = Object.freeze({{...}});`"
    return dict(re.findall(r"([A-Z_]+):\s*'([^']*)'", m.group(1)))


@pytest.mark.parametrize(("js", "enum"), [("TASK_KIND", TaskKind), ("TASK_STATE", TaskState),
                                          ("EVENT_TYPE", EventType)])
def test_viewer_constants_match(js: str, enum: type[StrEnum]) -> None:
    assert _js_object(js) == {m.name: m.value for m in enum}


def test_a_success_is_announced_as_done() -> None:
    assert event_for_state(TaskState.SUCCEEDED) == EventType.DONE
    assert event_for_state("failed") == "failed"
    assert set(TERMINAL) == {"succeeded", "failed", "cancelled"}
