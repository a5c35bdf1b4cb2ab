"""Training patches for SAM-Med3D as a torch ``Dataset``, loaded by a ``DataLoader`` with workers.

:func:`scan_rows` reads every row's mask once (the target's bounding box; rows with an empty
mask are counted and left out). :class:`PatchDataset` then reads a row's image and mask when an
item is asked for and cuts a 128³ patch at 1.5 mm around the target, its centre moved by up to
``jitter`` voxels (z-normalised as at inference). The jitter of item ``i`` in epoch ``e`` comes
from ``np.random.default_rng([seed, e, i])`` alone, never from a worker's random state, so a
loader with ``num_workers`` > 0 yields exactly the batches of ``num_workers = 0`` (same seed),
in the order of the batch lists (:func:`epoch_batches`).
Imports torch and numpy; must not import the CLI or the API.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from segloop.engines.sammed3d.preprocess import PatchGrid, znormalise
from segloop.train.sammed3d.data import SeedRow, load_pair

__all__ = ["Batch", "PatchDataset", "RowTarget", "epoch_batches", "iterate", "scan_rows"]

#: (images (B, 1, S, S, S) float32, targets (B, 1, S, S, S) float32, item indices (B,))
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class RowTarget:
    """A row with a non-empty target: the centre of the target's bounding box (voxels)."""

    row: SeedRow
    centre: tuple[float, float, float]


def scan_rows(rows: Sequence[SeedRow]) -> tuple[list[RowTarget], int]:
    """The rows whose mask has a target (with its box centre) and the number of empty ones."""
    out: list[RowTarget] = []
    empty = 0
    for r in rows:
        _, _, m = load_pair(r)
        if not m.any():
            empty += 1
            continue
        nz = np.argwhere(m)
        c = (nz.min(0) + nz.max(0)) / 2
        out.append(RowTarget(r, (float(c[0]), float(c[1]), float(c[2]))))
    return out, empty


class PatchDataset(Dataset[tuple[torch.Tensor, torch.Tensor, int]]):
    """Item ``i``: ``(image (1, S, S, S) float32, target (1, S, S, S) float32, i)``."""

    def __init__(self, targets: Sequence[RowTarget], size: int, seed: int, jitter: int) -> None:
        self.targets = list(targets)
        self.size = size
        self.seed = seed
        self.jitter = jitter
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose jitter the next loader iterator draws (set before iterating)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        t = self.targets[i]
        img, spacing, m = load_pair(t.row)
        rng = np.random.default_rng([self.seed, self.epoch, i])
        shift = rng.integers(-self.jitter, self.jitter + 1, 3) * (1.5 / np.asarray(spacing))
        centre = np.asarray(t.centre) + shift
        shape = (int(img.shape[0]), int(img.shape[1]), int(img.shape[2]))
        g = PatchGrid.around(shape, spacing, centre, 1.5, self.size)
        image = torch.from_numpy(znormalise(g.sample(img)))[None]
        target = torch.from_numpy(g.sample(m.astype(np.float32)) > 0.5)[None].float()
        return image, target, i


def epoch_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """A shuffled order of ``n`` items cut into batches (the last one may be short)."""
    order = rng.permutation(n).tolist()
    return [order[i:i + batch_size] for i in range(0, n, max(1, batch_size))]


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # workers only resample; leave the cores to the model


def iterate(ds: PatchDataset, batches: list[list[int]], num_workers: int) -> Iterator[Batch]:
    """The batches, in order, prepared by ``num_workers`` worker processes (0: in-process)."""
    loader = DataLoader(ds, batch_sampler=batches, num_workers=max(0, num_workers),
                        worker_init_fn=_one_thread if num_workers > 0 else None,
                        generator=torch.Generator().manual_seed(ds.seed))
    yield from loader
