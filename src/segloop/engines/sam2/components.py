"""The largest 3D connected component of a mask, labelled in slabs (numpy/scipy, no torch).

MedSAM2 keeps the largest 26-connected component of the propagated mask. Labelling a whole
512x512x300 mask at once needs a label volume of 2-4 bytes per voxel (150-300 MB) beside the
1-byte mask; here the mask is labelled in slabs along its first axis of at most
``slab_voxels`` voxels (int32 labels, 4 MB by default), the slabs are joined where they touch
(a graph of their labels, :func:`scipy.sparse.csgraph.connected_components`), and a second pass
relabels each slab to clear what is not the winner. Twice scipy's labelling time, a few MB.

The winner is the one the whole-volume labelling (:func:`.preprocess.largest_component_labels`)
picks: the largest component, ties going to the one whose first voxel in C order comes first
(scipy numbers components in that order; slabs along the first axis keep it).
Must not import torch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from segloop.types import BoolArray

__all__ = ["cut_to_largest_component"]

_S26 = np.ones((3, 3, 3), dtype=bool)


def _slabs(mask3d: BoolArray, slab_voxels: int) -> Iterator[tuple[int, int]]:
    plane = max(1, int(mask3d.shape[1]) * int(mask3d.shape[2]))
    step = max(1, int(slab_voxels) // plane)
    for a in range(0, int(mask3d.shape[0]), step):
        yield a, min(a + step, int(mask3d.shape[0]))


def _label(block: BoolArray) -> tuple[npt.NDArray[np.int32], int]:
    from scipy import ndimage

    out = np.empty(block.shape, dtype=np.int32)
    n = int(ndimage.label(block, structure=_S26, output=out))
    return out, n


def _counts(lab: npt.NDArray[np.int32], n: int, chunk: int = 1 << 16) -> npt.NDArray[np.int64]:
    """Voxels of labels 1..n (``np.bincount`` copies its input to int64: a chunk at a time)."""
    flat = lab.reshape(-1)
    counts = np.zeros(n + 1, dtype=np.int64)
    for i in range(0, flat.size, chunk):
        counts += np.bincount(flat[i:i + chunk], minlength=n + 1)
    return counts[1:]


def _touching(prev: npt.NDArray[np.int64], cur: npt.NDArray[np.int64]
              ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Pairs of (global) labels of two adjacent planes that touch (26-connectivity)."""
    ny, nz = prev.shape
    a_parts, b_parts = [], []
    for dy in (-1, 0, 1):
        for dz in (-1, 0, 1):
            p = prev[max(0, -dy):ny - max(0, dy), max(0, -dz):nz - max(0, dz)]
            c = cur[max(0, dy):ny - max(0, -dy), max(0, dz):nz - max(0, -dz)]
            both = (p > 0) & (c > 0)
            # each touching pair once (a plane-wide component gives ~9 pairs per voxel)
            key = np.unique((p[both] << 32) | c[both])
            a_parts.append(key >> 32)
            b_parts.append(key & 0xFFFFFFFF)
    key = np.unique((np.concatenate(a_parts) << 32) | np.concatenate(b_parts))
    return key >> 32, key & 0xFFFFFFFF


def _winner_nodes(mask3d: BoolArray, slab_voxels: int) -> tuple[npt.NDArray[np.bool_], bool]:
    """Per slab label (in slab order, 0-based across slabs): is it part of the winner?

    The second value is False when the mask is empty."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    sizes: list[npt.NDArray[np.int64]] = []
    edges_a: list[npt.NDArray[np.int64]] = []
    edges_b: list[npt.NDArray[np.int64]] = []
    offset = 0
    prev: npt.NDArray[np.int64] | None = None
    for a, b in _slabs(mask3d, slab_voxels):
        lab, n = _label(mask3d[a:b])
        sizes.append(_counts(lab, n))
        first = np.where(lab[0] > 0, lab[0].astype(np.int64) + offset, 0)
        if prev is not None:
            pa, pb = _touching(prev, first)
            edges_a.append(pa)
            edges_b.append(pb)
        prev = np.where(lab[-1] > 0, lab[-1].astype(np.int64) + offset, 0)
        offset += n
        del lab
    if offset == 0:
        return np.zeros(0, dtype=bool), False
    ea = np.concatenate(edges_a) - 1 if edges_a else np.zeros(0, np.int64)
    eb = np.concatenate(edges_b) - 1 if edges_b else np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(len(ea), dtype=np.int8), (ea, eb)), shape=(offset, offset))
    ncomp, comp = connected_components(graph, directed=False)
    size = np.bincount(comp, weights=np.concatenate(sizes), minlength=ncomp)
    # a component's rank in scipy's whole-volume numbering: its first slab label
    first_node = np.full(ncomp, offset, dtype=np.int64)
    np.minimum.at(first_node, comp, np.arange(offset, dtype=np.int64))
    best = np.flatnonzero(size == size.max())
    winner = best[np.argmin(first_node[best])]
    return comp == winner, True


def cut_to_largest_component(mask3d: BoolArray, zs: Sequence[int],
                             slab_voxels: int = 1 << 20) -> list[int]:
    """Clear, in place and on slices ``zs`` (last axis) only, every voxel of the 3D bool mask
    that is not in its largest 26-connected component; return the slices of ``zs`` it changed
    (in the order of ``zs``). ``mask3d`` may be a view (e.g. the mask's bounding box)."""
    keep_nodes, any_voxel = _winner_nodes(mask3d, slab_voxels)
    wanted = sorted({int(z) for z in zs if 0 <= int(z) < mask3d.shape[2]})
    if not any_voxel or not wanted:
        return []
    sel = np.zeros(int(mask3d.shape[2]), dtype=bool)
    sel[wanted] = True
    changed = np.zeros(int(mask3d.shape[2]), dtype=bool)
    offset = 0
    for a, b in _slabs(mask3d, slab_voxels):
        lab, n = _label(mask3d[a:b])
        lookup: npt.NDArray[Any] = np.concatenate([[False], keep_nodes[offset:offset + n]])
        offset += n
        keep = lookup[lab]
        del lab
        keep[:, :, ~sel] = True  # other slices are left as they are
        slab = mask3d[a:b]
        changed |= (slab & ~keep).any(axis=(0, 1))
        slab &= keep
    return [z for z in dict.fromkeys(int(z) for z in zs) if 0 <= z < len(changed) and changed[z]]
