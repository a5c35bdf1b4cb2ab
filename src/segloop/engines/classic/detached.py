"""The parts of an object that a negative click left detached from everything the user said
is the target (option ``drop_detached``).

A negative click on a run-on past the target's end (or in a leak) removes the part it cuts on
its slice and carries the removal to the neighbouring slices, but what the carry does not
reach stays: pieces of the run-on that no longer touch the target in 3D (a gallbladder's
run-on below an emptied slice, ``benchmarks/devset.md``, fifteenth pass). Every voxel the user
vouched for lies on an *evidence* slice: one with a box, a positive point, or a mask the user
set (an anchor without prompts). A piece is attached when a chain of slice-to-slice links
joins it to such a slice's mask: two components on neighbouring slices are linked where they
overlap in plane or lie within ``reach_mm`` of each other (the growth a propagation allows
between two slices). Whatever no chain reaches goes.

Masks are ``(X, Y, Z)`` bool arrays of the canonical grid. Must not import the classic
engine's propagation or session modules, torch, FastAPI, Celery or the CLI.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from segloop.engines.classic.morphology import Crop, bbox
from segloop.engines.state import ObjectState
from segloop.types import BoolArray

__all__ = ["detached", "evidence_slices"]

_EIGHT = np.ones((3, 3), dtype=bool)


def evidence_slices(st: ObjectState) -> set[int]:
    """The anchors of ``st`` whose mask the user vouched for: a box, a positive point, or a
    mask set without prompts (a slice with negative points only is not one)."""
    out = set()
    for z in st.anchors:
        p = st.prompts.get(z)
        if p is None or p.box is not None or bool((p.labels == 1).any()):
            out.add(z)
    return out


def detached(mask: BoolArray, evidence: set[int], sp: tuple[float, float],
             reach_mm: float) -> BoolArray:
    """The voxels of ``mask`` (``(X, Y, Z)``) in 2D components that no chain of neighbouring
    slices' components (overlapping, or within ``reach_mm`` in plane, spacing ``sp``) joins
    to a component on an ``evidence`` slice; all of them when no evidence slice holds any."""
    out = np.zeros(mask.shape, dtype=bool)
    zs = [int(z) for z in np.flatnonzero(mask.any(axis=(0, 1)))]
    if not zs:
        return out
    bb = bbox(np.asarray(mask.any(axis=2), dtype=bool))
    assert bb is not None
    box = (slice(bb[0], bb[2] + 1), slice(bb[1], bb[3] + 1))
    out[box] = _detached(mask[box], zs, evidence, sp, reach_mm)
    return out


def _detached(mask: BoolArray, zs: list[int], evidence: set[int], sp: tuple[float, float],
              reach_mm: float) -> BoolArray:
    """:func:`detached` on the mask's box (``zs``: its non-empty slices)."""
    out = np.zeros(mask.shape, dtype=bool)
    labels: dict[int, tuple[np.ndarray, int]] = {}
    offset: dict[int, int] = {}
    total = 0
    for z in zs:
        lab, n = ndi.label(mask[:, :, z], structure=_EIGHT)
        labels[z], offset[z] = (lab, n), total
        total += n
    parent = list(range(total + 1))  # union-find over (slice, component); 0 unused

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for z in zs:
        if z + 1 not in labels:
            continue
        (a, na), (b, nb) = labels[z], labels[z + 1]
        linked_a, linked_b = _links(a, na, b, nb, sp, reach_mm)
        for i, j in zip(linked_a, linked_b, strict=True):
            ri, rj = find(offset[z] + i), find(offset[z + 1] + j)
            if ri != rj:
                parent[ri] = rj
    roots = {find(offset[z] + i) for z in zs if z in evidence for i in range(1, labels[z][1] + 1)}
    for z in zs:
        lab, n = labels[z]
        drop = np.array([False] + [find(offset[z] + i) not in roots for i in range(1, n + 1)])
        out[:, :, z] = drop[lab]
    return out


def _links(a: np.ndarray, na: int, b: np.ndarray, nb: int, sp: tuple[float, float],
           reach_mm: float) -> tuple[list[int], list[int]]:
    """Pairs (component of ``a``, component of ``b``) of two neighbouring slices' labellings
    that overlap, plus, for a component of either slice overlapping nothing on the other, the
    other's components within ``reach_mm`` of it."""
    both = (a > 0) & (b > 0)
    codes = np.unique(a[both].astype(np.int64) * (nb + 1) + b[both])
    pairs = {(int(c // (nb + 1)), int(c % (nb + 1))) for c in codes}
    lone_a = set(range(1, na + 1)) - {p[0] for p in pairs}
    lone_b = set(range(1, nb + 1)) - {p[1] for p in pairs}
    for i in lone_a:
        pairs |= {(i, j) for j in _near(a == i, b, sp, reach_mm)}
    for j in lone_b:
        pairs |= {(i, j) for i in _near(b == j, a, sp, reach_mm)}
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _near(comp: BoolArray, other: np.ndarray, sp: tuple[float, float], reach_mm: float) -> set[int]:
    """Labels of ``other`` with a voxel within ``reach_mm`` (in plane) of the component."""
    bb = bbox(comp)
    if bb is None:
        return set()
    mx, my = (int(np.ceil(reach_mm / s)) + 1 for s in sp)
    crop = Crop.around(bb, mx, my, *comp.shape)
    c, o = comp[crop.sl], other[crop.sl]
    if not (o > 0).any():
        return set()
    dist = ndi.distance_transform_edt(~c, sampling=sp)
    hit = (o > 0) & (dist <= reach_mm)
    return {int(v) for v in np.unique(o[hit])}
