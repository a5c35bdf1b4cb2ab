"""Shape and size checks every reader runs on a header before any voxel is read or inflated.

``ReadLimits`` carries the caller's limits (voxels, decoded bytes, and the folder detached data
files must stay inside); the ``check_*`` helpers raise :mod:`segloop.errors` types with
one-line messages. Imports numpy and segloop.errors only; never a reader library.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.ism, segloop.train, segloop.eval, segloop.jobs, segloop.datastore, segloop.engines,
segloop.models (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from segloop.errors import InputError, VolumeTooLargeError

__all__ = ["DEFAULT_MAX_VOXELS", "ReadLimits", "check_bytes", "check_voxels", "itemsize_of", "shape3"]

#: default voxel limit (2**30, e.g. 1024 x 1024 x 1024): a decompression-bomb guard
DEFAULT_MAX_VOXELS = 2**30


@dataclass(frozen=True)
class ReadLimits:
    """What a reader may read.

    max_voxels: refuse images declaring more voxels (None: no limit).
    max_bytes: refuse images whose decoded voxel data (voxels x bytes per voxel of the stored
        dtype) exceeds this (None: no limit). Both are checked from the header, before inflating.
    data_root: when set, a header's separate data file (NRRD ``data file``, MetaImage
        ``ElementDataFile``, Analyze ``.img``) must resolve inside this folder (the service's
        upload path); None lets a header name any file (the CLI, on the user's own files).
    """

    max_voxels: int | None = DEFAULT_MAX_VOXELS
    max_bytes: int | None = None
    data_root: Path | None = None


def shape3(path: Path, shape: Sequence[int]) -> tuple[int, int, int]:
    """The 3D shape after squeezing trailing singleton dims; raises for 2D and true 4D+."""
    dims = [int(s) for s in shape]
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) < 3:
        raise InputError(
            f"{path}: found a {len(dims)}D image of shape {tuple(dims)}; segloop needs one 3D volume"
        )
    if len(dims) > 3:
        frames = math.prod(dims[3:])
        raise InputError(
            f"{path}: found a {len(dims)}D image of shape {tuple(dims)} with {frames} frames; "
            "segloop needs one 3D volume (extract one frame first)"
        )
    if 0 in dims:
        raise InputError(f"{path}: the image is empty (shape {tuple(dims)})")
    return dims[0], dims[1], dims[2]


def check_voxels(path: Path, shape: Sequence[int], max_voxels: int | None) -> None:
    """VolumeTooLargeError when ``shape`` has more than ``max_voxels`` voxels."""
    n = math.prod(int(s) for s in shape)
    if max_voxels is not None and n > max_voxels:
        raise VolumeTooLargeError(
            f"{path}: the header declares {'x'.join(str(int(s)) for s in shape)} = {n} voxels, "
            f"above the limit of {max_voxels} (max_voxels); nothing was read"
        )


def check_bytes(path: Path, shape: Sequence[int], itemsize: int, limits: ReadLimits) -> None:
    """Voxel and decoded-byte limits for an image of ``shape`` stored ``itemsize`` bytes a voxel."""
    check_voxels(path, shape, limits.max_voxels)
    n = math.prod(int(s) for s in shape) * max(1, int(itemsize))
    if limits.max_bytes is not None and n > limits.max_bytes:
        raise VolumeTooLargeError(
            f"{path}: the header declares {'x'.join(str(int(s)) for s in shape)} voxels of "
            f"{itemsize} bytes = {n / 2**20:.0f} MiB decoded, above the limit of "
            f"{limits.max_bytes / 2**20:.0f} MiB (SEGLOOP_MAX_VOLUME_BYTES); nothing was read"
        )


def itemsize_of(dtype: npt.DTypeLike) -> int:
    """Bytes per voxel of ``dtype``."""
    return int(np.dtype(dtype).itemsize)
