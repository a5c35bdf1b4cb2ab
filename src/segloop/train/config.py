"""The resolved configuration of one training run, as a plain JSON-able dataclass (no torch).

:class:`TrainConfig` holds every choice a run makes (data, model, trained parts, optimiser,
schedule, precision, outputs). It is written to ``config.json`` in the run folder and stored in
every checkpoint, so a run can be resumed and a checkpoint explained. Options are ``StrEnum``
values (MONAI style). Must not import torch, transformers, the API or the engines.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from segloop.errors import InputError

__all__ = [
    "DEFAULT_PARTS_2D",
    "DEFAULT_PARTS_3D",
    "Part",
    "Precision",
    "Scheduler",
    "TrainConfig",
    "parse_parts",
]


class Part(StrEnum):
    """A trainable part of a SAM 2 model (``--train`` accepts a comma-separated list)."""

    MASK_DECODER = "mask-decoder"
    PROMPT_ENCODER = "prompt-encoder"
    MEMORY = "memory"
    IMAGE_ENCODER = "image-encoder"


class Scheduler(StrEnum):
    """Learning-rate schedule, stepped once per epoch (after validation)."""

    NONE = "none"
    PLATEAU = "plateau"
    COSINE = "cosine"
    STEP = "step"


class Precision(StrEnum):
    """Numeric precision of the forward pass (weights stay fp32)."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


#: default trained parts: 2D data has no memory path to learn; 3D clips train it too
DEFAULT_PARTS_2D: tuple[Part, ...] = (Part.MASK_DECODER, Part.PROMPT_ENCODER)
DEFAULT_PARTS_3D: tuple[Part, ...] = (Part.MASK_DECODER, Part.PROMPT_ENCODER, Part.MEMORY)


def parse_parts(text: str | None, default: tuple[Part, ...]) -> tuple[Part, ...]:
    """``"mask-decoder,prompt-encoder"`` -> parts (sorted, unique); None/empty -> ``default``."""
    if not text:
        return default
    out: list[Part] = []
    for raw in text.split(","):
        name = raw.strip().lower().replace("_", "-")
        if not name:
            continue
        try:
            part = Part(name)
        except ValueError:
            raise InputError(
                f"--train: unknown part {raw.strip()!r}; choose from "
                f"{', '.join(p.value for p in Part)}"
            ) from None
        if part not in out:
            out.append(part)
    if not out:
        raise InputError("--train names no part: give e.g. mask-decoder,prompt-encoder")
    return tuple(sorted(out, key=list(Part).index))


@dataclass
class TrainConfig:
    """Everything a training run needs, resolved (defaults filled in before the run starts).

    Data (exactly one source): ``images``/``masks`` (2D folders; ``train/`` and ``val/``
    sub-folders, else ``val_fraction`` of the patients go to validation), ``manifest``/``root``
    (3D volumes), or ``datastore`` (the server's reviewed masks; a manifest under the hood).
    ``clip_length``: consecutive slices per 3D sample (the first one is prompted).
    ``model``: registry name, or ``"tiny"`` for a tiny random configuration at ``image_size``.
    ``parts``: trained parts (the rest are frozen; None: mask decoder + prompt encoder, plus
    the memory path for 3D data). ``epochs`` x at most
    ``samples_per_epoch`` samples, ``accumulate`` samples per optimiser step.
    ``patience``: epochs without a better validation IoU before stopping (0 = never).
    """

    out: str
    images: str | None = None
    masks: str | None = None
    manifest: str | None = None
    root: str | None = None
    datastore: str | None = None
    val_fraction: float = 0.2
    patient_pattern: str | None = None
    clip_length: int = 3
    window: str | None = "auto"
    model: str = "medsam2"
    base_engine: str = "medsam2"
    image_size: int = 64
    parts: list[str] | None = None
    epochs: int = 10
    samples_per_epoch: int = 0
    val_samples: int = 0
    accumulate: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.01
    clip_grad: float = 1.0
    scheduler: str = Scheduler.PLATEAU.value
    step_size: int = 5
    gamma: float = 0.5
    patience: int = 0
    precision: str = Precision.AUTO.value
    grad_checkpointing: bool = False
    device: str = "auto"
    seed: int = 0
    threads: int = 2
    dice_weight: float = 1.0
    iou_weight: float = 0.05
    object_weight: float = 1.0
    box_jitter: float = 0.1
    smoke: bool = False
    run_name: str | None = None
    register: bool = True
    wandb: bool = False
    mlflow: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise InputError for impossible values (checked before any data is read)."""
        sources = [self.images is not None or self.masks is not None, self.manifest is not None,
                   self.datastore is not None]
        if sum(sources) != 1:
            raise InputError("give exactly one data source: --images/--masks, --manifest or"
                             " --from-datastore")
        if (self.images is None) != (self.masks is None):
            raise InputError("2D training needs both --images DIR and --masks DIR")
        if not 0.0 < self.val_fraction < 1.0:
            raise InputError(f"--val-fraction must be between 0 and 1, got {self.val_fraction}")
        for name in ("epochs", "accumulate", "clip_length", "threads"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1, got"
                                 f" {getattr(self, name)}")
        if self.lr <= 0:
            raise InputError(f"--lr must be > 0, got {self.lr}")
        if self.image_size <= 0 or self.image_size % 32:
            raise InputError(f"--image-size must be a positive multiple of 32, got"
                             f" {self.image_size}")
        Scheduler(self.scheduler)
        Precision(self.precision)
        for p in self.parts or []:
            Part(p)

    @property
    def is_3d(self) -> bool:
        """True for volume sources (manifest or datastore)."""
        return self.images is None

    @property
    def out_dir(self) -> Path:
        """The run folder."""
        return Path(self.out)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
