"""The classic engine's entry point (``segloop.engines.classic:ClassicEngine``).

Must not import torch, FastAPI, Celery or the CLI.
"""

from __future__ import annotations

from typing import ClassVar

from segloop.engines.classic.options import ClassicOptions
from segloop.engines.classic.session import ClassicSession
from segloop.io.volume import Volume

__all__ = ["ClassicEngine"]


class ClassicEngine:
    """Weights-free engine (numpy/scipy/scikit-image): CT and MR, box and ± points, 3D.

    ``options``: :class:`ClassicOptions` fields by name; an unknown one raises
    :class:`~segloop.errors.EngineError` here, not when a session opens.
    """

    name: ClassVar[str] = "classic"
    description: ClassVar[str] = (
        "weights-free intensity-model segmentation with slice-to-slice propagation (CPU, no download)"
    )

    def __init__(self, **options: float | None) -> None:
        self.options = ClassicOptions.from_mapping(options)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Always available: needs only numpy, scipy and scikit-image."""
        return None

    def open(self, volume: Volume) -> ClassicSession:
        """Open a session on the canonical view of ``volume``."""
        return ClassicSession(volume, self.options)
