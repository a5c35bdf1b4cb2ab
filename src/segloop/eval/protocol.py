"""The interactive evaluation protocol: one box on the key slice, propagation, simulated clicks.

The protocol (issue 2, item 7): the box is the bounding box of the truth on the axial slice
where the target is largest; the engine segments that slice and propagates; then up to N
corrective clicks are simulated, each at the most interior voxel (largest Euclidean distance
to the region's border, in mm) of the largest 3D error region — a positive click in a missed
region, a negative click in a spurious one — and the engine refines from that click's slice.

Arrays are on the volume's canonical grid, axes (x, y, z). Imports numpy/scipy and the engine
protocol only (no metrics, no plotting: see segloop.eval.metrics / report).
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.ism, segloop.train (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from segloop.engines.base import Engine, drive
from segloop.errors import InputError
from segloop.io.volume import Volume
from segloop.types import BoolArray, Prompts

__all__ = ["Click", "InteractionRun", "box_from_mask", "key_slice", "next_click", "run_interaction"]


@dataclass(frozen=True)
class Click:
    """A simulated click at voxel (x, y, z); label 1 = positive (missed), 0 = negative."""

    x: int
    y: int
    z: int
    label: int


@dataclass
class InteractionRun:
    """Result of one case: masks after the box (index 0) and after each click (1..n).

    masks: list of ``(X, Y, Z)`` bool arrays; seconds: engine time for each step;
    clicks: the clicks placed; key_z and box: the initial prompt.
    """

    key_z: int
    box: tuple[int, int, int, int]
    masks: list[BoolArray] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    clicks: list[Click] = field(default_factory=list)


def key_slice(truth: BoolArray) -> int:
    """The axial index z where ``truth`` ``(X, Y, Z)`` has the most voxels (first on ties)."""
    areas = truth.sum(axis=(0, 1))
    if areas.max() == 0:
        raise InputError("the label is empty: no voxel of the target structure")
    return int(np.argmax(areas))


def box_from_mask(mask2d: BoolArray) -> tuple[int, int, int, int]:
    """Inclusive bounding box ``(x0, y0, x1, y1)`` of a non-empty ``(X, Y)`` mask.

    A box one voxel wide is widened by one voxel (still inside the slice) so it is a valid box.
    """
    xs = np.flatnonzero(mask2d.any(axis=1))
    ys = np.flatnonzero(mask2d.any(axis=0))
    if xs.size == 0:
        raise InputError("cannot make a box from an empty mask")
    x0, x1, y0, y1 = int(xs[0]), int(xs[-1]), int(ys[0]), int(ys[-1])
    nx, ny = mask2d.shape
    if x1 == x0:
        x0, x1 = (x0, x0 + 1) if x0 + 1 < nx else (x0 - 1, x0)
    if y1 == y0:
        y0, y1 = (y0, y0 + 1) if y0 + 1 < ny else (y0 - 1, y0)
    return (x0, y0, x1, y1)


def next_click(
    pred: BoolArray, truth: BoolArray, spacing: tuple[float, float, float]
) -> Click | None:
    """The next simulated corrective click, or None when the prediction is perfect.

    Error regions are the 3D connected components (26-connectivity) of the missed voxels
    (truth & ~pred) and of the spurious ones (pred & ~truth); the largest by voxel count is
    chosen and the click lands on its voxel farthest (in mm) from the region's border.
    """
    best: tuple[int, BoolArray, int] | None = None
    structure = np.ones((3, 3, 3), dtype=bool)
    for err, label in ((truth & ~pred, 1), (pred & ~truth, 0)):
        if not err.any():
            continue
        lab, _ = ndi.label(err, structure=structure)
        sizes = np.bincount(lab.ravel())[1:]
        k = int(np.argmax(sizes))
        if best is None or sizes[k] > best[0]:
            best = (int(sizes[k]), lab == k + 1, label)
    if best is None:
        return None
    _, region, label = best
    # the distance transform only needs the region's bounding box (padded so borders count)
    (sl,) = ndi.find_objects(region.astype(np.uint8))
    padded = np.pad(region[sl], 1)
    dist = ndi.distance_transform_edt(padded, sampling=spacing)[1:-1, 1:-1, 1:-1]
    x, y, z = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return Click(int(x) + sl[0].start, int(y) + sl[1].start, int(z) + sl[2].start, label)


def run_interaction(
    engine: Engine,
    volume: Volume,
    truth: BoolArray,
    clicks: int = 0,
    on_step: Callable[[int], None] | None = None,
) -> InteractionRun:
    """Run the protocol for one case.

    volume: the image (any orientation; its canonical grid is used); truth: ``(X, Y, Z)`` bool on
    ``volume.canonical()``'s grid. Returns the masks after the box and after each click
    (stopping early when the prediction becomes perfect).
    """
    can = volume.canonical()
    if truth.shape != can.shape:
        raise InputError(f"truth shape {truth.shape} differs from the volume's {can.shape}")
    z = key_slice(truth)
    box = box_from_mask(truth[:, :, z])
    run = InteractionRun(key_z=z, box=box)
    t0 = time.perf_counter()
    session = engine.open(can)
    session.segment_slice(z, Prompts(box=box))
    drive(session.propagate(z))
    run.seconds.append(time.perf_counter() - t0)
    run.masks.append(session.mask().copy())
    if on_step:
        on_step(0)
    for i in range(clicks):
        click = next_click(run.masks[-1], truth, can.spacing)
        if click is None:
            break
        t0 = time.perf_counter()
        prompts = Prompts.make(points=[(click.x, click.y)], labels=[click.label])
        drive(session.refine(click.z, prompts))
        run.seconds.append(time.perf_counter() - t0)
        run.masks.append(session.mask().copy())
        run.clicks.append(click)
        if on_step:
            on_step(i + 1)
    return run
