"""The words a task and its events are made of: task kinds, task states and event types.

These are the values stored in the job database, sent over the API and matched by the web
viewer (``segloop/web/static/viewer.js`` keeps the same values in its ``TASK_KIND``,
``TASK_STATE`` and ``EVENT_TYPE`` objects; tests/jobs/test_states.py checks they agree).
StrEnum members compare equal to their strings, so rows and JSON keep plain strings.
Imports nothing from segloop; must not import SQLAlchemy, FastAPI, Celery or torch.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ACTIVE", "TERMINAL", "EventType", "TaskKind", "TaskState", "event_for_state"]


class TaskKind(StrEnum):
    """What a task asks an engine to do."""

    INITIAL_MASK = "initial-mask"
    PROPAGATE = "propagate"
    REFINE = "refine"
    SEGMENT = "segment"  # clear + initial mask + propagate + refines in one step (segmentstep)


class TaskState(StrEnum):
    """Where a task is in its life (the ``state`` column of a task row)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class EventType(StrEnum):
    """The ``type`` of a progress event (SSE event name); clients ignore types they do not know."""

    STATUS = "status"
    QUEUED = "queued"
    STARTED = "started"
    PROGRESS = "progress"
    RECOVERING = "recovering"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    VERSION = "version"


#: states a task never leaves
TERMINAL: tuple[TaskState, ...] = (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)
#: states of a task that is not finished yet
ACTIVE: tuple[TaskState, ...] = (TaskState.QUEUED, TaskState.RUNNING)


def event_for_state(state: str) -> str:
    """The event type announcing a task that reached ``state`` (a success is ``done``; other
    states keep their own name)."""
    return EventType.DONE if state == TaskState.SUCCEEDED else state
