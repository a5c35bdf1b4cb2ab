"""The interactive evaluation protocols: how the simulated user prompts an engine, click by click.

``segloop`` (:attr:`ClickProtocol.SEGLOOP`, issue 2, item 7): the box is the bounding box of
the truth on the axial slice where the target is largest; the engine segments that slice and
propagates; then up to N corrective clicks are simulated, each at the most interior voxel
(largest Euclidean distance to the region's border, in mm) of the largest 3D error region — a
positive click in a missed region, a negative click in a spurious one — and the engine refines
from that click's slice; it stops early when the prediction is perfect.

``sammed3d`` (:attr:`ClickProtocol.SAMMED3D`): SAM-Med3D's own validation
(``validate_paired_img_gt`` with ``random_sample_next_click``), so numbers compare with the
published ones: numpy's random state is seeded with 233 for each case; the first prompt is one
positive click at a uniformly random voxel of the target; each further click is a uniformly
random voxel of the whole error region (missed ∪ spurious voxels), positive when missed, and a
random target voxel again when there is no error (never stopping early). Each click goes to the
engine on its own slice (``segment_slice`` + ``propagate`` for the first, ``refine`` after).

Arrays are on the volume's canonical grid, axes (x, y, z). Imports numpy/scipy and the engine
protocol only (no metrics, no plotting: see segloop.eval.metrics / report).
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.ism, segloop.train (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from scipy import ndimage as ndi

from segloop.engines.base import Engine, Session, drive
from segloop.errors import InputError
from segloop.io.volume import Volume
from segloop.types import BoolArray, Click, Prompts

__all__ = ["SAMMED3D_SEED", "AfterRefine", "Click", "ClickProtocol", "InteractionRun", "box_from_mask",
           "key_slice", "next_click", "random_error_click", "run_interaction", "simulate_clicks"]

#: numpy's seed in SAM-Med3D's ``validate_paired_img_gt`` (set once per case)
SAMMED3D_SEED = 233

#: called after each simulated refinement with the session, the click and the mask before it
AfterRefine = Callable[[Session, Click, BoolArray], None]


class ClickProtocol(StrEnum):
    """How the simulated user prompts (see the module docstring)."""

    SEGLOOP = "segloop"
    SAMMED3D = "sammed3d"


@dataclass
class InteractionRun:
    """Result of one case: masks after the box (index 0) and after each click (1..n).

    masks: list of ``(X, Y, Z)`` bool arrays; seconds: engine time for each step;
    clicks: the clicks placed (with the SAM-Med3D protocol the first one is the initial prompt,
    ``initial_clicks`` = 1); key_z and box: the initial prompt's slice and the truth's box there.
    """

    key_z: int
    box: tuple[int, int, int, int]
    masks: list[BoolArray] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    clicks: list[Click] = field(default_factory=list)
    initial_clicks: int = 0

    def click_of_step(self, step: int) -> Click | None:
        """The click placed at ``step`` (0 = the initial prompt), None when it was no click."""
        i = step - 1 + self.initial_clicks
        return self.clicks[i] if 0 <= i < len(self.clicks) else None


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
    # the distance transform only needs the region's bounding box (padded so borders count;
    # a one-slice grid, a 2D picture, has no border along z: padding it there would put
    # every voxel within one slice spacing of the border and the click on the region's edge)
    (sl,) = ndi.find_objects(region.astype(np.uint8))
    zpad = 1 if region.shape[2] > 1 else 0
    padded = np.pad(region[sl], ((1, 1), (1, 1), (zpad, zpad)))
    dist = ndi.distance_transform_edt(padded, sampling=spacing)[1:-1, 1:-1, zpad:padded.shape[2] - zpad]
    x, y, z = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return Click(int(x) + sl[0].start, int(y) + sl[1].start, int(z) + sl[2].start, label)


def random_error_click(pred: BoolArray, truth: BoolArray, rng: np.random.RandomState) -> Click:
    """SAM-Med3D's ``random_sample_next_click``: a uniformly random voxel of the error region
    (missed ∪ spurious; C order of the ``(X, Y, Z)`` grid), positive when missed; a random
    target voxel, positive, when there is no error."""
    missed = truth & ~pred
    err = missed | (pred & ~truth)
    pts = np.argwhere(err if err.any() else truth)
    if not len(pts):
        raise InputError("the label is empty: no voxel of the target structure")
    p = pts[rng.randint(len(pts))]
    positive = bool(missed[p[0], p[1], p[2]]) or not err.any()
    return Click(int(p[0]), int(p[1]), int(p[2]), int(positive))


def _run_sammed3d(engine: Engine, can: Volume, truth: BoolArray, clicks: int,
                  on_step: Callable[[int], None] | None) -> InteractionRun:
    rng = np.random.RandomState(SAMMED3D_SEED)
    first = random_error_click(np.zeros_like(truth), truth, rng)
    run = InteractionRun(key_z=first.z, box=box_from_mask(truth[:, :, first.z]), initial_clicks=1)
    for step in range(clicks + 1):
        click = first if step == 0 else random_error_click(run.masks[-1], truth, rng)
        prompts = Prompts.make(points=[(click.x, click.y)], labels=[click.label])
        t0 = time.perf_counter()
        if step == 0:
            session = engine.open(can)
            session.segment_slice(click.z, prompts)
            drive(session.propagate(click.z))
        else:
            drive(session.refine(click.z, prompts))
        run.seconds.append(time.perf_counter() - t0)
        run.masks.append(session.mask().copy())
        run.clicks.append(click)
        if on_step:
            on_step(step)
    return run


def run_interaction(
    engine: Engine,
    volume: Volume,
    truth: BoolArray,
    clicks: int = 0,
    on_step: Callable[[int], None] | None = None,
    protocol: ClickProtocol = ClickProtocol.SEGLOOP,
    after_refine: AfterRefine | None = None,
) -> InteractionRun:
    """Run the protocol for one case.

    volume: the image (any orientation; its canonical grid is used); truth: ``(X, Y, Z)`` bool on
    ``volume.canonical()``'s grid. Returns the masks after the initial prompt (the box, or
    SAM-Med3D's first click) and after each of ``clicks`` further clicks (the segloop protocol
    stops early when the prediction becomes perfect). ``after_refine``: see
    :func:`simulate_clicks` (segloop protocol only).
    """
    can = volume.canonical()
    if truth.shape != can.shape:
        raise InputError(f"truth shape {truth.shape} differs from the volume's {can.shape}")
    if protocol is ClickProtocol.SAMMED3D:
        if after_refine is not None:
            raise ValueError("after_refine applies to the segloop protocol only")
        key_slice(truth)  # an empty label is an error here too
        return _run_sammed3d(engine, can, truth, clicks, on_step)
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
    simulate_clicks(session, truth, can.spacing, run, clicks, on_step, after_refine)
    return run


def simulate_clicks(
    session: Session,
    truth: BoolArray,
    spacing: tuple[float, float, float],
    run: InteractionRun,
    clicks: int,
    on_step: Callable[[int], None] | None = None,
    after_refine: AfterRefine | None = None,
) -> None:
    """Add up to ``clicks`` of the segloop protocol's clicks to ``run``, refining ``session``.

    ``run.masks[-1]`` must be the session's current mask (the start: after the box, or after
    propagating a given key-slice mask). Each click goes to :func:`next_click` of the last mask;
    it stops early when the prediction is perfect. ``after_refine`` (session, click, mask before
    the click) runs after each refinement, outside the timing, and may edit the session: the
    step's mask is read after it returns (the benchmarks' what-if oracles).
    """
    for _ in range(clicks):
        before = run.masks[-1]
        click = next_click(before, truth, spacing)
        if click is None:
            break
        t0 = time.perf_counter()
        prompts = Prompts.make(points=[(click.x, click.y)], labels=[click.label])
        drive(session.refine(click.z, prompts))
        run.seconds.append(time.perf_counter() - t0)
        if after_refine:
            after_refine(session, click, before)
        run.masks.append(session.mask().copy())
        run.clicks.append(click)
        if on_step:
            on_step(len(run.masks) - 1)
