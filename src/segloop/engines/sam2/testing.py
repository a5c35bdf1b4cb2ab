"""Test support: install tiny random-weight checkpoints so the SAM 2 engines can run in tests.

:func:`install_tiny_weights` builds a tiny ``Sam2VideoModel`` (random weights, see
:func:`segloop.models.configs.tiny_config`), writes it in the original checkpoint format and
imports it into the model cache under a registry name, exactly as a user would import a real
file. Random weights cannot segment: only the engine mechanics are testable with them.
Imports torch; must not import the API or the CLI.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from segloop.models.configs import tiny_config
from segloop.models.loader import build_model, save_original_checkpoint
from segloop.models.store import import_model

__all__ = ["install_tiny_weights"]


def install_tiny_weights(name: str = "medsam2", image_size: int = 64, seed: int = 0,
                         threads: int | None = 1) -> Path:
    """Import a tiny random-weight checkpoint as registry entry ``name``; return its cache dir.

    ``threads`` sets torch's CPU threads for the process (None: unchanged): tiny models run
    many small ops, which one thread does fastest, above all on a busy machine.
    """
    if threads:
        torch.set_num_threads(threads)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = build_model(tiny_config(image_size))
    torch.random.set_rng_state(gen_state)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_original_checkpoint(model, Path(tmp) / "tiny.pt")
        return import_model(path, name, config=tiny_config(image_size))
