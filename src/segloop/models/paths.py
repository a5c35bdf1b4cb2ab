"""Where the model cache lives (``$SEGLOOP_HOME/models``) and the names of a model's files.

Bottom of ``segloop.models``: standard library only; must not import any other segloop module
(the per-model folders, which need the registry, are in :mod:`segloop.models.store`).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CHECKPOINT", "HF_DIR", "META", "models_home"]

CHECKPOINT = "checkpoint.pt"
META = "meta.json"
HF_DIR = "hf"


def models_home() -> Path:
    """``$SEGLOOP_HOME/models`` (``SEGLOOP_HOME`` defaults to ``~/.segloop``)."""
    home = os.environ.get("SEGLOOP_HOME") or "~/.segloop"
    return Path(home).expanduser() / "models"
