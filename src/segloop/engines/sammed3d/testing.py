"""Test support: random-weight SAM-Med3D checkpoints in the official layout, imported into the cache.

:func:`install_tiny_weights` builds a tiny :class:`SamMed3D` (random weights,
:meth:`SamMed3DConfig.tiny`), writes it as the official trainer does
(``{"model_state_dict": official names}``) and imports it under a registry name exactly as a
user would import a real file, recording the tiny architecture in the cache's meta.json.
Random weights cannot segment: only the engine mechanics are testable with them.
Imports torch; must not import the API or the CLI.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from segloop.engines.sammed3d.convert import save_official
from segloop.engines.sammed3d.model import SamMed3D, SamMed3DConfig
from segloop.models.store import import_model

__all__ = ["install_tiny_weights", "random_model"]


def random_model(config: SamMed3DConfig, seed: int = 0, scale: float = 0.02) -> SamMed3D:
    """A model whose every tensor is random (no two same-shaped tensors equal), in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    model = SamMed3D(config)
    with torch.no_grad():
        for i, t in enumerate(model.state_dict().values()):
            if t.is_floating_point():
                t.add_(scale * (1.0 + i / 97.0) * torch.randn(t.shape, generator=gen))
    return model.eval()


def install_tiny_weights(name: str = "sam-med3d-turbo", seed: int = 0,
                         threads: int | None = 1) -> Path:
    """Import a tiny random-weight checkpoint as registry entry ``name``; return its cache dir."""
    if threads:
        torch.set_num_threads(threads)
    cfg = SamMed3DConfig.tiny()
    with tempfile.TemporaryDirectory() as tmp:
        path = save_official(random_model(cfg, seed), Path(tmp) / "tiny.pth")
        return import_model(path, name, config=cfg.to_dict())
