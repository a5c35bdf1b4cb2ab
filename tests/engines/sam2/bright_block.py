"""A synthetic CT-like volume with one bright block, and mask IoU, for the SAM 2 engine tests
that compare masks between two paths (encoder batching, the device scheduler)."""

from __future__ import annotations

import numpy as np

from segloop.io.volume import Volume

__all__ = ["bright_block_volume", "iou"]


def bright_block_volume(nz: int = 24, seed: int = 2) -> Volume:
    """40 x 52 x nz of noise around -100 HU with a +250 block at [8:24, 12:40, 2:nz-2]."""
    rng = np.random.default_rng(seed)
    data = rng.normal(0.0, 40.0, (40, 52, nz)).astype(np.float32) - 100.0
    data[8:24, 12:40, 2:nz - 2] += 250.0
    return Volume(data=data, affine=np.eye(4), source_format="npz", modality="CT")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)
