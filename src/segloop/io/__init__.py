"""Volume I/O: read images into :class:`Volume`, write masks on the source grid, windowing.

Must not import torch, FastAPI, Celery or any engine.
"""

from segloop.io.volume import DicomRef, Volume

__all__ = ["DicomRef", "Volume"]
