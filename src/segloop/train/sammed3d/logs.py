"""Where a SAM-Med3D fine-tuning run logs: Weights & Biases when asked and installed, else TensorBoard.

``use_wandb`` with the ``wandb`` package installed starts a W&B run in the output folder
(``<output_dir>/wandb/``; ``WANDB_MODE=offline`` keeps it on disk for ``wandb sync``) with the
run's options as its config; without the package (or without ``use_wandb``) scalars and images
go to ``<output_dir>/tensorboard/`` when TensorBoard is installed. Scalars are logged with a
global step; images (the validation key slice and the prediction) with ``--log_images``.
Imports wandb / TensorBoard lazily; must not import the CLI or the API.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["SeedRunLog"]

log = logging.getLogger(__name__)


class SeedRunLog:
    """One run's logging backend (``backend``: ``"wandb"``, ``"tensorboard"`` or ``"none"``)."""

    def __init__(self, out: Path, use_wandb: bool, project: str, config: Mapping[str, Any],
                 say: Callable[[str], None]) -> None:
        self._wandb: Any = None
        self._tb: Any = None
        self.backend = "none"
        if use_wandb:
            try:
                import wandb
            except ImportError:
                say("wandb is not installed: logging to TensorBoard instead")
            else:
                self._wandb = wandb.init(project=project, dir=str(out), config=dict(config))
                self.backend = "wandb"
                return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.info("tensorboard is not installed: the summary JSON is the only log")
            return
        self._tb = SummaryWriter(str(out / "tensorboard"))
        self.backend = "tensorboard"

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        """Scalars at a global step."""
        if self._wandb is not None:
            self._wandb.log(dict(values), step=step)
        elif self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, step)

    def image(self, name: str, hw: npt.NDArray[Any], step: int) -> None:
        """A 2D image (any numeric range; scaled to [0, 1]) at a global step."""
        a = np.asarray(hw, dtype=np.float32)
        a = (a - a.min()) / (float(np.ptp(a)) + 1e-6)
        if self._wandb is not None:
            import wandb

            self._wandb.log({name: wandb.Image(a)}, step=step)
        elif self._tb is not None:
            self._tb.add_image(name, a, step, dataformats="HW")

    def close(self) -> None:
        """Flush and end the run."""
        if self._wandb is not None:
            self._wandb.finish()
        if self._tb is not None:
            self._tb.close()
