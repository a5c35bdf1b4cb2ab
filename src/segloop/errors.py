"""Typed errors whose messages a person can act on.

Every error segloop raises on bad input derives from :class:`SegloopError`. The CLI prints
``str(error)`` on one line and exits with ``error.exit_code``; the API answers ``error.http_status``
with the same text. Imports nothing from segloop.
"""

from __future__ import annotations

__all__ = [
    "CancelledError",
    "EngineError",
    "InputError",
    "ModelNotAvailableError",
    "PromptError",
    "SegloopError",
    "UnsupportedFormatError",
    "VolumeTooLargeError",
]


class SegloopError(Exception):
    """Base of every error segloop raises on purpose. The message is meant for the user."""

    exit_code: int = 2
    http_status: int = 400


class InputError(SegloopError):
    """A file or folder that cannot be read as a volume (missing, truncated, wrong shape, NaN...)."""

    http_status = 422


class UnsupportedFormatError(InputError):
    """The file is not in a format segloop reads."""

    http_status = 415


class VolumeTooLargeError(InputError):
    """The volume (or upload) exceeds the configured size limit; checked before inflating data."""

    http_status = 413


class PromptError(SegloopError):
    """A box, point or slice index that does not fit the volume."""

    http_status = 422


class EngineError(SegloopError):
    """An engine could not run (bad state, call out of order)."""

    http_status = 409


class ModelNotAvailableError(SegloopError):
    """Weights for a model are not cached locally."""

    http_status = 503


class CancelledError(SegloopError):
    """Long work was cancelled by the caller."""

    exit_code = 130
    http_status = 409
