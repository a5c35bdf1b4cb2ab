"""Where a target ends along z: the weakest link in a chain of slice masks.

A negative click that empties a propagated slice says the target is not there, so it ended
somewhere between the nearest anchor and that slice. Nothing on the clicked slice says where:
the run-on past a target's end looks like the target (the next vertebra through the disc, grey
matter beyond the thalamus), or the tracking would not have taken it. What changes is the
continuity: where the target ends and a neighbour begins, the mask moves in place and the
tissue inside it changes. The link between two slices' masks is scored by both, Dice of the
masks in place times one minus the two-sample Kolmogorov-Smirnov statistic of the image values
inside them (1 for the same shape over the same tissue, 0 for no overlap or disjoint
intensities); the target ends at the weakest link whose far side looks at least as much like
the rejected slice as like the accepted anchor.

From one box there is no click, but a run-on onto a *different* object often shows as one:
the tracked mask jumps (a fifth or more of one slice's mask lies farther from the other's than
the slices' spacing allows a smooth surface to move) and the object then grows back to at
least its size before the jump, where a target's own tip would go on shrinking. The target
ends before such a jump (:class:`JumpWatch`).

Masks are ``(X, Y)`` bool slices of one ``(X, Y, Z)`` volume; image values are raw
(undenoised) intensities. Must not import the rest of the classic engine, torch, FastAPI,
Celery or the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from segloop.types import BoolArray

__all__ = ["JumpWatch", "jump_fraction", "ks_statistic", "link_strength", "weakest_link"]


def ks_statistic(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating]) -> float:
    """The two-sample Kolmogorov-Smirnov statistic of samples ``a`` and ``b``: the largest gap
    between their empirical distribution functions, in [0, 1]; 1 when either is empty."""
    if a.size == 0 or b.size == 0:
        return 1.0
    xa, xb = np.sort(a.ravel()), np.sort(b.ravel())
    grid = np.concatenate([xa, xb])
    fa = np.searchsorted(xa, grid, side="right") / xa.size
    fb = np.searchsorted(xb, grid, side="right") / xb.size
    return float(np.max(np.abs(fa - fb)))


def link_strength(img: npt.NDArray[np.floating], a: tuple[int, BoolArray],
                  b: tuple[int, BoolArray]) -> float:
    """How well the mask of b = (slice z, mask) continues that of a on the ``(X, Y, Z)`` volume
    ``img``: Dice of the two masks in place times one minus the KS statistic of the values
    inside them; 0 when either mask is empty."""
    (za, ma), (zb, mb) = a, b
    na, nb = int(ma.sum()), int(mb.sum())
    if na == 0 or nb == 0:
        return 0.0
    dice = 2.0 * int((ma & mb).sum()) / (na + nb)
    return dice * (1.0 - ks_statistic(img[:, :, za][ma], img[:, :, zb][mb]))


def weakest_link(img: npt.NDArray[np.floating], chain: Sequence[tuple[int, BoolArray]]) -> int:
    """Where the target ends in a chain of (slice z, mask) pairs that runs from an anchor (the
    first, a slice the user accepted) to a slice the user rejected (the last): the index j of
    the link ``chain[j] -> chain[j + 1]`` after which everything is past the end.

    It is the weakest link (:func:`link_strength`) among those whose far side
    (``chain[j + 1]``) is at least as strong a continuation of the rejected mask as of the
    anchor's. The link out of the anchor is never chosen: the anchor's mask comes from the
    user's prompt and its neighbour's from tracking, so that link always shows a change of
    method, not of tissue. The result lies between 1 and ``len(chain) - 2`` (the link into
    the rejected slice: nothing before it is past the end); 0 for a chain of two.
    """
    last = len(chain) - 2
    if last <= 1:
        return max(last, 0)
    anchor, rejected = chain[0], chain[-1]
    best, weakest = last, np.inf
    for j in range(1, last):
        after = chain[j + 1]
        if link_strength(img, rejected, after) < link_strength(img, anchor, after):
            continue  # the far side is still more like the anchor: the target goes on
        strength = link_strength(img, chain[j], after)
        if strength < weakest:
            best, weakest = j, strength
    if link_strength(img, chain[last], rejected) < weakest:
        best = last
    return best


def jump_fraction(a: BoolArray, b: BoolArray, sp: tuple[float, float], tol_mm: float) -> float:
    """How far two neighbouring slices' ``(X, Y)`` masks are from continuing each other: the
    larger of the fractions of ``a`` lying farther than ``tol_mm`` (in plane, spacing ``sp``
    in mm) from ``b`` and of ``b`` lying farther than that from ``a``; 0 for two equal masks,
    1 when either is empty or they are far apart."""
    if not a.any() or not b.any():
        return 1.0
    xs, ys = np.nonzero(a | b)
    mx, my = (int(np.ceil(tol_mm / s)) + 1 for s in sp)
    x0, y0 = max(int(xs.min()) - mx, 0), max(int(ys.min()) - my, 0)
    crop = (slice(x0, int(xs.max()) + mx + 1), slice(y0, int(ys.max()) + my + 1))
    ca, cb = a[crop], b[crop]
    far_a = float(np.mean(ndi.distance_transform_edt(~cb, sampling=sp)[ca] > tol_mm))
    far_b = float(np.mean(ndi.distance_transform_edt(~ca, sampling=sp)[cb] > tol_mm))
    return max(far_a, far_b)


@dataclass
class JumpWatch:
    """Watches one direction of a propagation for a new object replacing the tracked one.

    Feed it the slices in order (:meth:`step`, the first being the anchor's). A link where
    :func:`jump_fraction` exceeds ``frac`` at a tolerance of ``tol_mm`` (the in-plane distance
    a smooth surface may move between the two slices: ``jump_mm`` times the slice spacing)
    is a *jump*; it stays pending until a slice from it on exceeds ``regrow`` times the area
    of the slice before the jump, which ends the target before the jump. A jump that is never
    followed by such a regrowth is the target's own tip shrinking or shifting, and stands.
    ``sp``: in-plane spacing (mm).
    """

    frac: float
    tol_mm: float
    regrow: float
    sp: tuple[float, float]
    pending: list[tuple[int, int]] = field(default_factory=list)  # (position, area before)
    position: int = -1  # the last slice fed (0 = the first)
    _prev: BoolArray | None = None

    def step(self, mask: BoolArray) -> int | None:
        """Take the next slice's mask; return the position (0 = the first slice fed) of the
        earliest jump that this slice's regrowth confirms, after which the target has ended,
        or None."""
        self.position += 1
        prev, self._prev = self._prev, mask
        area = int(mask.sum())
        if prev is not None and prev.any() and mask.any() \
                and jump_fraction(prev, mask, self.sp, self.tol_mm) > self.frac:
            self.pending.append((self.position, int(prev.sum())))
        for pos, before in self.pending:  # the jump's own slice may show the regrowth
            if area > self.regrow * before:
                return pos
        return None

    def settled(self) -> int | None:
        """The earliest position that a later slice could still show to be past the end
        (a pending jump's), or None: every slice before it is final."""
        return self.pending[0][0] if self.pending else None
