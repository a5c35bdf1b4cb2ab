"""MedSAM's training-data layout (``imgs/*.npy`` + ``gts/*.npy``) written from segloop's data.

As bowang-lab/MedSAM's ``pre_CT_MR.py``: each slice that holds the target becomes
``imgs/<case>-<zzz>.npy``, the grey slice repeated to 3 channels, resized to ``size`` px with
``skimage.transform.resize(order=3, preserve_range=True, mode="constant",
anti_aliasing=True)`` and min-max scaled to [0, 1] (float64, ``(size, size, 3)``), and
``gts/<case>-<zzz>.npy``, the target resized with ``order=0`` (uint8 0/1, ``(size, size)``).
Slices come as segloop's engines see them (rows = canonical y, columns = x) after the same
intensity rule (CT window, MR percentiles: :func:`segloop.train.data.load_manifest_records`).
Must not import torch, the API or the CLI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from segloop.train.records import ImageRecord

__all__ = ["export_npy"]

log = logging.getLogger(__name__)


def export_npy(records: Sequence[ImageRecord], out_dir: Path, *, size: int = 1024,
               on_progress: Callable[[str], None] | None = None) -> int:
    """Write every target slice of ``records`` in MedSAM's npy layout; returns the slice count."""
    from skimage import transform

    (out_dir / "imgs").mkdir(parents=True, exist_ok=True)
    (out_dir / "gts").mkdir(parents=True, exist_ok=True)
    n = 0
    for rec in records:
        for z in np.flatnonzero(rec.truth.any(axis=(1, 2))):
            img = rec.frames[z]
            img_3c = np.repeat(img[:, :, None], 3, axis=-1) if img.ndim == 2 else img
            resized = transform.resize(img_3c, (size, size), order=3, preserve_range=True,
                                       mode="constant", anti_aliasing=True)
            img01 = (resized - resized.min()) / np.clip(resized.max() - resized.min(), 1e-8, None)
            gt = transform.resize(rec.truth[z].astype(np.uint8), (size, size), order=0,
                                  preserve_range=True, mode="constant", anti_aliasing=False)
            name = f"{rec.name}-{int(z):03d}.npy"
            np.save(out_dir / "imgs" / name, img01)
            np.save(out_dir / "gts" / name, np.uint8(gt))
            n += 1
            if on_progress is not None:
                on_progress(name)
    log.info("wrote %d slices in MedSAM's npy layout to %s", n, out_dir)
    return n
