"""Test support: import random-weight MedSAM checkpoints in MedSAM's own (``segment_anything``)
layout, exactly as a user imports ``medsam_vit_b.pth``.

:func:`install_tiny_medsam` writes a tiny ``SamModel`` (see
:func:`segloop.models.sam_v1.tiny_sam_config`) renamed to the original layout and imports it
with its config; random weights cannot segment, only the mechanics are testable. Imports
torch; must not import the API or the CLI.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from segloop.models.sam_v1 import build_sam_model, sam_hf_to_original, tiny_sam_config
from segloop.models.store import import_model

__all__ = ["install_tiny_medsam", "save_medsam_checkpoint"]


def save_medsam_checkpoint(model: torch.nn.Module, path: Path) -> Path:
    """Write a ``SamModel``'s weights as MedSAM does: a plain ``segment_anything`` state dict."""
    sd = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sam_hf_to_original(sd), path)
    return path


def install_tiny_medsam(name: str = "medsam", image_size: int = 64, seed: int = 0,
                        threads: int | None = 1) -> Path:
    """Import a tiny random-weight MedSAM checkpoint as ``name``; return its cache dir."""
    if threads:
        torch.set_num_threads(threads)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = build_sam_model(tiny_sam_config(image_size))
    torch.random.set_rng_state(state)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_medsam_checkpoint(model, Path(tmp) / "medsam_tiny.pth")
        return import_model(path, name, config=tiny_sam_config(image_size))
