"""SAM 2-family engines (MedSAM2, SAM 2.1) running ``transformers``' Sam2VideoModel.

Importing this package does not import torch; the model loads on the first ``open()``.
Must not import FastAPI, Celery or the CLI.
"""

from segloop.engines.sam2.engine import (
    MedSAM2Engine,
    Sam2Engine,
    Sam21BasePlusEngine,
    Sam21LargeEngine,
    Sam21SmallEngine,
    Sam21TinyEngine,
)

__all__ = [
    "MedSAM2Engine",
    "Sam2Engine",
    "Sam21BasePlusEngine",
    "Sam21LargeEngine",
    "Sam21SmallEngine",
    "Sam21TinyEngine",
]
