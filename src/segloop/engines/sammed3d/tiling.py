"""Targets larger than one SAM-Med3D patch: neighbour patches and how their predictions merge.

When a patch's predicted mask reaches one of its faces (the outer 2-voxel shell) and the volume
continues there, :func:`queue_neighbours` queues the patch shifted by half a patch along that
axis, with a positive click where the mask crossed the face and the low-res logits shifted by
the same half patch as mask prompt. :func:`merge_central` pastes a patch's prediction onto the
volume where the patch is more central than every earlier one (each voxel keeps the prediction
of the patch in which it lies most centrally). The session drives the breadth-first loop.
Imports numpy and torch; must not import the session, the CLI, FastAPI or Celery.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from segloop.engines.sammed3d.preprocess import PatchGrid
from segloop.types import BoolArray

__all__ = ["Tile", "merge_central", "queue_neighbours"]

#: a queued patch: its grid, the feedback logits, extra clicks (patch voxel x, y, z, label)
Tile = tuple[PatchGrid, torch.Tensor, list[tuple[int, int, int, int]]]


def merge_central(g: PatchGrid, hr: BoolArray, out: BoolArray,
                  best: npt.NDArray[np.uint8] | None) -> npt.NDArray[np.uint8]:
    """Paste where this patch is more central than any earlier one (ties: earlier wins)."""
    if best is None:
        best = np.zeros(out.shape, dtype=np.uint8)
    (ix, px), (iy, py), (iz, pz) = (g.canonical_index(a) for a in range(3))
    if not (ix.size and iy.size and iz.size):
        return best
    half = g.size / 2

    def central(p: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        res: npt.NDArray[np.float64] = half - np.abs(p + 0.5 - half)
        return res

    c = np.minimum(np.minimum(central(px)[:, None, None], central(py)[None, :, None]),
                   central(pz)[None, None, :])
    score = np.ceil(c).astype(np.uint8)
    sub = np.ix_(ix, iy, iz)
    win = score > best[sub]
    region = out[sub]
    region[win] = hr[np.ix_(px, py, pz)][win]
    out[sub] = region
    cur = best[sub]
    cur[win] = score[win]
    best[sub] = cur
    return best


def queue_neighbours(g: PatchGrid, hr: BoolArray, low: torch.Tensor, queue: list[Tile],
                     seen: set[tuple[int, int, int]]) -> None:
    """Append the half-shifted neighbour patches where the mask ``hr`` reaches a face of ``g``.

    Each gets one positive click on the mask where it crossed the face (the shell voxel nearest
    the crossing's centroid) and ``low`` shifted by the same half patch as feedback (the part
    that comes from outside ``g`` zeroed). ``seen``: patch starts already queued (updated).
    """
    size, half = g.size, g.size // 2
    m = g.resampled_shape
    n_low = low.shape[-1]
    for axis in range(3):
        for sign in (1, -1):
            if sign > 0 and g.start[axis] + size >= m[axis]:
                continue
            if sign < 0 and g.start[axis] <= 0:
                continue
            idx = [slice(None)] * 3
            idx[axis] = slice(size - 2, size) if sign > 0 else slice(0, 2)
            shell = np.argwhere(hr[tuple(idx)])
            if not shell.size:
                continue
            start = list(g.start)
            start[axis] += sign * half
            key = (start[0], start[1], start[2])
            if key in seen:
                continue
            seen.add(key)
            shell[:, axis] += idx[axis].start
            centroid = shell.mean(axis=0)
            p = shell[int(np.argmin(((shell - centroid) ** 2).sum(axis=1)))]
            p_new = p + np.asarray(g.start) - np.asarray(key)
            shift = sign * n_low // 2
            fb = torch.roll(low, shifts=-shift, dims=2 + axis)
            sl = [slice(None)] * 5
            sl[2 + axis] = slice(n_low - n_low // 2, n_low) if sign > 0 else slice(0, n_low // 2)
            fb[tuple(sl)] = 0.0
            ng = PatchGrid(g.shape, g.spacing, g.target, g.size, key)
            queue.append((ng, fb, [(int(p_new[0]), int(p_new[1]), int(p_new[2]), 1)]))
