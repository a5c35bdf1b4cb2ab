"""The radiological view of canonical slices: the orientation 2D models are fed in.

segloop's canonical grid is RAS+ (nibabel ``as_closest_canonical``): an axial slice is an
``(X, Y)`` array whose x index grows towards the patient's right and y towards anterior. The
*radiological view* of an axial slice shows the anterior side at the top (row 0) and the
patient's right on the image's left (column 0): how a CT/MR axial series stored LPS (the usual
DICOM storage) looks when read as stored. For a canonical slice it is the slice rotated by
180 degrees and transposed::

    image[row, col] == slice_xy[X - 1 - col, Y - 1 - row]

so a canonical voxel ``(x, y)`` is the image pixel ``(col, row) = (X - 1 - x, Y - 1 - y)``.
MedSAM2, SAM 2 and MedSAM were trained on slices read as stored, i.e. mostly in this view;
feeding every model this view makes results independent of how a file happens to be stored.

Pure numpy. Must not import torch or any engine.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "box_to_view",
    "points_to_view",
    "slice_to_view",
    "view_to_slice",
    "volume_to_views",
]

_T = TypeVar("_T", bound=np.generic)


def slice_to_view(slice_xy: npt.NDArray[_T]) -> npt.NDArray[_T]:
    """A canonical ``(X, Y)`` slice (or ``(X, Y, C)``) as the ``(H=Y, W=X)`` radiological image."""
    arr = np.asarray(slice_xy)
    return np.ascontiguousarray(np.swapaxes(arr[::-1, ::-1], 0, 1))


def view_to_slice(image: npt.NDArray[_T]) -> npt.NDArray[_T]:
    """The inverse of :func:`slice_to_view`: an ``(H, W)`` view back to the ``(X, Y)`` slice."""
    arr = np.swapaxes(np.asarray(image), 0, 1)
    return np.ascontiguousarray(arr[::-1, ::-1])


def volume_to_views(volume_xyz: npt.NDArray[_T]) -> npt.NDArray[_T]:
    """A canonical ``(X, Y, Z)`` volume as ``(Z, H=Y, W=X)`` radiological slices."""
    arr = np.asarray(volume_xyz)
    return np.ascontiguousarray(arr[::-1, ::-1, :].transpose(2, 1, 0))


def points_to_view(points: npt.NDArray[Any], shape_xy: tuple[int, int]) -> npt.NDArray[np.float64]:
    """``(N, 2)`` canonical ``(x, y)`` pixels -> ``(N, 2)`` view ``(col, row)`` pixels."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return np.stack([(shape_xy[0] - 1) - p[:, 0], (shape_xy[1] - 1) - p[:, 1]], axis=1)


def box_to_view(box: tuple[float, float, float, float], shape_xy: tuple[int, int]
                ) -> tuple[float, float, float, float]:
    """A canonical box ``(x0, y0, x1, y1)`` (inclusive) as the view box ``(c0, r0, c1, r1)``.

    The corners swap: the canonical top-left ``(x0, y0)`` becomes the view's bottom-right.
    Integer boxes stay integral (returned as the same numeric values, typed float).
    """
    x0, y0, x1, y1 = box
    xm, ym = shape_xy[0] - 1, shape_xy[1] - 1
    return (xm - x1, ym - y1, xm - x0, ym - y0)
