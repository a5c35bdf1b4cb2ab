"""The ``sammed3d`` engine: SAM-Med3D (3D ViT-B on 128³ patches at 1.5 mm) in segloop's own torch code.

Importing this package does not import torch; the model loads on the first ``open()``.
Modules: ``model`` (the network, built from ``config``, ``encoder``, ``decoder`` and
``layers``), ``tokens`` (the optional visual-token head for vision-language models), ``convert``
(official checkpoint names <-> ours, strict loading), ``preprocess`` (1.5 mm patches,
normalisation, paste-back; numpy only), ``clicks`` (slice prompts -> 3D clicks), ``session``
(feedback, patch placement), ``tiling`` (targets larger than one patch), ``engine`` (the
registry class), ``testing`` (random-weight checkpoints for tests).
Must not import FastAPI, Celery or the CLI.
"""

from segloop.engines.sammed3d.engine import SamMed3DEngine

__all__ = ["SamMed3DEngine"]
