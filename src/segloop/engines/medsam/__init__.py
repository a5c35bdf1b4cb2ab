"""The ``medsam`` engine: MedSAM v1 (SAM ViT-B) on 2D images and, slice by slice, on volumes.

Importing this package does not import torch; the model loads on first use.
Must not import FastAPI, Celery or the CLI.
"""

from segloop.engines.medsam.engine import MedSAMEngine

__all__ = ["MedSAMEngine"]
