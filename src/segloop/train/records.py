"""The training data's records: an image or volume with its target (:class:`ImageRecord`),
a prompt on a clip's first frame (:class:`PromptSample`) and a clip with its prompt
(:class:`Sample`).

Plain dataclasses over numpy arrays; must not import torch, the other segloop.train modules,
the API or the engines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["IMAGE_SUFFIXES", "U8", "Bool", "ImageRecord", "PromptSample", "Sample"]

#: the file suffixes of 2D training images and masks
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

U8 = npt.NDArray[np.uint8]
Bool = npt.NDArray[np.bool_]


@dataclass
class ImageRecord:
    """One image or volume with its target.

    frames: uint8 ``(Z, H, W)`` (grey) or ``(Z, H, W, 3)`` (RGB); Z = 1 for a 2D image.
    truth: bool ``(Z, H, W)``. patient_id: the split unit.
    """

    name: str
    patient_id: str
    frames: U8
    truth: Bool

    @property
    def n_frames(self) -> int:
        """Number of slices (1 for 2D)."""
        return int(self.frames.shape[0])


@dataclass(frozen=True)
class PromptSample:
    """Prompts on the first frame of a clip, in that frame's pixels.

    box: ``(x0, y0, x1, y1)`` inclusive (x = column, y = row) or None; points: ``(N, 2)``
    float ``(x, y)``; labels: ``(N,)`` int, 1 positive / 0 negative.
    """

    box: tuple[float, float, float, float] | None
    points: npt.NDArray[np.float64]
    labels: npt.NDArray[np.int64]


@dataclass(frozen=True)
class Sample:
    """One training or validation sample: a clip and its prompt.

    frames: uint8 ``(T, H, W)`` or ``(T, H, W, 3)``; truth: bool ``(T, H, W)``; the prompt
    is on frame 0; ``name`` says where the clip comes from (record, slices).
    """

    name: str
    frames: U8
    truth: Bool
    prompt: PromptSample
