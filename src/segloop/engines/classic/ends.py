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

Masks are ``(X, Y)`` bool slices of one ``(X, Y, Z)`` volume; image values are raw
(undenoised) intensities. Must not import the rest of the classic engine, torch, FastAPI,
Celery or the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from segloop.types import BoolArray

__all__ = ["ks_statistic", "link_strength", "weakest_link"]


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

