"""Slice ranges and connected regions of one object in a label map.

A leaking propagation is stopped and cleaned with these: clear the object from a slice up or
down (:func:`clear_slices`), keep it between a first and a last slice (:func:`keep_slices`,
also the propagation range), remove the connected region a click lands in, on its slice or in
3D (:func:`remove_region`), and remove islands smaller than a size (:func:`remove_islands`).
Connectivity is face-to-face (4 in 2D, 6 in 3D): the least that a leak through a thin gap
takes along. Must not import jobs, api, engines, torch or the web UI.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from segloop.errors import InputError

__all__ = ["clear_slices", "keep_slices", "remove_islands", "remove_region"]

Labels = npt.NDArray[np.uint8]


def _check(labels: npt.NDArray[Any], label: int) -> None:
    if labels.ndim != 3:
        raise InputError(f"a label map is 3D (X, Y, Z), got shape {labels.shape}")
    if not 1 <= label <= 255:
        raise InputError(f"label value {label} is outside 1..255")


def _check_slice(z: int, n: int, what: str) -> None:
    if not 0 <= z < n:
        raise InputError(f"{what} {z} is outside the volume's slices 0..{n - 1}")


def clear_slices(labels: Labels, label: int, first: int, last: int) -> Labels:
    """``labels`` without ``label`` on axial slices ``first..last`` (both included)."""
    _check(labels, label)
    nz = labels.shape[2]
    _check_slice(first, nz, "first slice")
    _check_slice(last, nz, "last slice")
    if first > last:
        raise InputError(f"first slice {first} is after last slice {last}")
    out = labels.copy()
    part = out[:, :, first:last + 1]
    part[part == label] = 0
    return out


def keep_slices(labels: Labels, label: int, first: int | None, last: int | None) -> Labels:
    """``labels`` with ``label`` only on axial slices ``first..last`` (None: that end open)."""
    _check(labels, label)
    nz = labels.shape[2]
    lo = 0 if first is None else first
    hi = nz - 1 if last is None else last
    _check_slice(lo, nz, "first slice")
    _check_slice(hi, nz, "last slice")
    if lo > hi:
        raise InputError(f"first slice {lo} is after last slice {hi}")
    out = labels.copy()
    for part in (out[:, :, :lo], out[:, :, hi + 1:]):
        part[part == label] = 0
    return out


def remove_region(labels: Labels, label: int, seed: tuple[int, int, int], *,
                  three_d: bool) -> tuple[Labels, int]:
    """``labels`` without the connected part of ``label`` that contains voxel ``seed``
    (x, y, z): on the seed's axial slice, or through the volume with ``three_d``; returns the
    new map and the number of voxels removed. InputError when the seed is not on the object."""
    _check(labels, label)
    x, y, z = seed
    if not all(0 <= c < n for c, n in zip(seed, labels.shape, strict=True)):
        raise InputError(f"voxel ({x}, {y}, {z}) is outside the volume {labels.shape}")
    if labels[x, y, z] != label:
        raise InputError(f"voxel ({x}, {y}, {z}) is not on this object: click inside its mask")
    out = labels.copy()
    if three_d:
        comp, _ = ndimage.label(labels == label)
        region = comp == comp[x, y, z]
        out[region] = 0
    else:
        comp2, _ = ndimage.label(labels[:, :, z] == label)
        region = comp2 == comp2[x, y]
        out[:, :, z][region] = 0
    return out, int(region.sum())


def remove_islands(labels: Labels, label: int, min_voxels: int, *, three_d: bool = True
                   ) -> tuple[Labels, int]:
    """``labels`` without the connected parts of ``label`` smaller than ``min_voxels`` (in 3D,
    or per axial slice); returns the new map and the number of voxels removed."""
    _check(labels, label)
    if min_voxels < 1:
        raise InputError(f"the minimum island size is at least 1 voxel, got {min_voxels}")
    out = labels.copy()
    removed = 0
    blocks = [out] if three_d else [out[:, :, z] for z in range(out.shape[2])]
    for block in blocks:
        m = block == label
        if not m.any():
            continue
        comp, n = ndimage.label(m)
        sizes = np.bincount(comp.ravel(), minlength=n + 1)
        small = sizes < min_voxels
        small[0] = False
        drop = small[comp]
        removed += int(drop.sum())
        block[drop] = 0
    return out, removed
