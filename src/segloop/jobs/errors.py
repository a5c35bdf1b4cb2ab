"""Errors of the job layer (access and state), each with the HTTP status the API answers.

Imports only segloop.errors.
"""

from __future__ import annotations

from segloop.errors import SegloopError

__all__ = ["AuthError", "ConflictError", "ForbiddenError", "HomeInUseError", "NotFoundError",
           "QueueUnavailableError"]


class NotFoundError(SegloopError):
    """An unknown job, task, object or version (or one the caller may not see)."""

    http_status = 404


class AuthError(SegloopError):
    """A missing or wrong API key."""

    http_status = 401


class ForbiddenError(SegloopError):
    """The caller's role does not allow this action."""

    http_status = 403


class ConflictError(SegloopError):
    """The request does not fit the job's current state (nothing to undo, no mask yet...)."""

    http_status = 409


class HomeInUseError(ConflictError):
    """Another embedded `segloop serve` holds the data directory."""


class QueueUnavailableError(SegloopError):
    """The task queue's broker (Redis) cannot be reached: nothing was recorded, try again."""

    http_status = 503
