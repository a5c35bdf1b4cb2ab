"""Plain data types shared by every layer: prompts and per-slice results.

Coordinates follow docs/DESIGN.md: voxel indices of the closest-canonical RAS array, axes
(x, y, z); a box is ``(x0, y0, x1, y1)`` on axial slice ``z`` with inclusive bounds, x along
array axis 0 and y along array axis 1. A prompt may also be drawn on a coronal or sagittal
slice (:class:`Plane`): its 2D coordinates are then the two other canonical axes in order
(coronal: x, z; sagittal: y, z). Imports only numpy and segloop.errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from segloop.errors import PromptError

__all__ = ["BoolArray", "Click", "FloatArray", "Plane", "Prompts", "SliceResult", "validate_prompts",
           "validate_slice"]

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.floating]


class Plane(StrEnum):
    """The plane a 2D prompt or edit is drawn on, named as viewers name it: axial slices z
    (in-plane x, y), coronal slices y (in-plane x, z), sagittal slices x (in-plane y, z)."""

    AXIAL = "axial"
    CORONAL = "coronal"
    SAGITTAL = "sagittal"

    @property
    def order(self) -> tuple[int, int, int]:
        """The canonical axes in the order of this plane's view: (u, v, slice axis)."""
        return _ORDER[self]

    @property
    def axis_names(self) -> tuple[str, str, str]:
        """The canonical axis names of the view's (u, v, slice) axes, e.g. ``("x", "z", "y")``."""
        o = self.order
        return ("xyz"[o[0]], "xyz"[o[1]], "xyz"[o[2]])

    def view_shape(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """The shape of the view of a canonical ``(X, Y, Z)`` array."""
        o = self.order
        return (int(shape[o[0]]), int(shape[o[1]]), int(shape[o[2]]))

    def to_view(self, arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """A canonical ``(X, Y, Z)`` array seen with this plane's slice axis last (a view)."""
        return arr if self is Plane.AXIAL else np.transpose(arr, self.order)

    def from_view(self, arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Back from :meth:`to_view` to the canonical axes (a view)."""
        return arr if self is Plane.AXIAL else np.transpose(arr, np.argsort(self.order))


_ORDER = {Plane.AXIAL: (0, 1, 2), Plane.CORONAL: (0, 2, 1), Plane.SAGITTAL: (1, 2, 0)}


@dataclass(frozen=True)
class Prompts:
    """Prompts on one axial slice.

    box: ``(x0, y0, x1, y1)`` inclusive voxel bounds, or None.
    points: ``(N, 2)`` int array of ``(x, y)`` voxel indices on the slice (may be empty).
    labels: ``(N,)`` int array, 1 = positive (inside the target), 0 = negative.
    """

    box: tuple[int, int, int, int] | None = None
    points: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    labels: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros((0,), np.int64))

    @staticmethod
    def make(
        box: tuple[int, int, int, int] | list[int] | None = None,
        points: list[tuple[int, int]] | list[list[int]] | npt.ArrayLike | None = None,
        labels: list[int] | npt.ArrayLike | None = None,
    ) -> Prompts:
        """Build prompts from plain Python values (lists, tuples), checking their shapes."""
        pts = np.zeros((0, 2), np.int64) if points is None else np.asarray(points, np.int64)
        if pts.size == 0:
            pts = np.zeros((0, 2), np.int64)
        lab = np.zeros((0,), np.int64) if labels is None else np.asarray(labels, np.int64)
        if lab.size == 0:
            lab = np.zeros((0,), np.int64)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise PromptError(f"points must be a list of (x, y) pairs, got shape {pts.shape}")
        if lab.shape != (pts.shape[0],):
            raise PromptError(
                f"got {pts.shape[0]} point(s) but {lab.size} label(s): give one label per point"
            )
        if lab.size and not np.isin(lab, (0, 1)).all():
            raise PromptError("point labels must be 1 (positive) or 0 (negative)")
        b = None if box is None else tuple(int(v) for v in box)
        if b is not None and len(b) != 4:
            raise PromptError(f"a box needs 4 numbers x0 y0 x1 y1, got {len(b)}")
        if b is None and pts.shape[0] == 0:
            raise PromptError("give a box or at least one point")
        return Prompts(box=b, points=pts, labels=lab)

    def merged(self, other: Prompts) -> Prompts:
        """Return prompts with ``other``'s points appended and its box (if any) replacing ours."""
        return Prompts(
            box=other.box if other.box is not None else self.box,
            points=np.concatenate([self.points, other.points]).astype(np.int64),
            labels=np.concatenate([self.labels, other.labels]).astype(np.int64),
        )


@dataclass(frozen=True)
class Click:
    """A 3D click at canonical voxel (x, y, z); label 1 = positive, 0 = negative. What a
    simulated user places (segloop.eval) and what SAM-Med3D takes as its prompt."""

    x: int
    y: int
    z: int
    label: int


@dataclass(frozen=True)
class SliceResult:
    """One slice of a propagation or refinement.

    z: axial index; mask: ``(X, Y)`` bool; done/total: progress counters (slices).
    """

    z: int
    mask: BoolArray
    done: int
    total: int


def validate_slice(z: int, shape: tuple[int, ...], plane: Plane = Plane.AXIAL) -> None:
    """Raise PromptError unless ``z`` is a slice of ``plane`` in a volume of ``shape`` (X, Y, Z)."""
    nz = plane.view_shape(shape)[2]
    if not 0 <= z < nz:
        where = "" if plane is Plane.AXIAL else f" {plane.value}"
        raise PromptError(f"slice index {z} is out of range: this volume has{where} slices "
                          f"0..{nz - 1}")


def validate_prompts(z: int, prompts: Prompts, shape: tuple[int, ...],
                     plane: Plane = Plane.AXIAL) -> None:
    """Check the slice index, box and points against a volume of ``shape`` (X, Y, Z); on a
    coronal or sagittal slice the prompt's (x, y) are the plane's in-plane axes."""
    validate_slice(z, shape, plane)
    nx, ny, _ = plane.view_shape(shape)
    u, v, _ = plane.axis_names  # the first prompt coordinate is along u, the second along v
    if prompts.box is not None:
        x0, y0, x1, y1 = prompts.box
        if x1 < x0 or y1 < y0:
            raise PromptError(
                f"box ({x0}, {y0}, {x1}, {y1}) has zero size: need x0 <= x1 and y0 <= y1"
            )
        if x0 < 0 or y0 < 0 or x1 >= nx or y1 >= ny:
            raise PromptError(
                f"box ({x0}, {y0}, {x1}, {y1}) lies outside the slice: {u} must be in 0..{nx - 1}"
                f" and {v} in 0..{ny - 1}"
            )
        if x1 == x0 or y1 == y0:
            raise PromptError(
                f"box ({x0}, {y0}, {x1}, {y1}) is only one voxel wide: draw a box around the target"
            )
    for (x, y) in prompts.points.tolist():
        if not (0 <= x < nx and 0 <= y < ny):
            raise PromptError(
                f"point ({x}, {y}) lies outside the slice: {u} must be in 0..{nx - 1}"
                f" and {v} in 0..{ny - 1}"
            )
