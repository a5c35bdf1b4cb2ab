"""The classic engine's negative clicks in a leak of another tissue: the part of the mask whose
intensities look more like the clicked spot's than like the object's.

A negative click on target-like intensity splits its component by a random walk restricted to
about one and a half times the click's depth, which leaves a round hole in a larger leak. When
the tissue around the click differs from the object's (its intensity density overlaps the
object's foreground density little), that difference is evidence of where the leak goes: the
voxels of the component that are more likely under the click's density than under the
object's, connected to the click and no deeper in the mask than the leak can be (the click
lies at the leak's most interior point, so the leak is about as thick as the click is deep),
are the leak.

Must not import the classic engine's segment2d, propagation or session modules, torch,
FastAPI, Celery or the CLI.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from segloop.engines.classic.intensity import F32, IntensityModel
from segloop.engines.classic.morphology import disk, keep_components
from segloop.types import BoolArray

__all__ = ["leak_part"]


def leak_part(img: F32, comp: BoolArray, inside: npt.NDArray[np.floating], seed: BoolArray,
              click: tuple[int, int], model: IntensityModel, noise: float,
              sp: tuple[float, float], max_overlap: float, depth: float) -> BoolArray:
    """The leak a negative click at ``click`` lies in, on a crop of one slice.

    img: the smoothed slice (crop); comp: the clicked component of the mask; inside: each
    voxel's distance (mm) to the component's border; seed: the voxels around the click that
    the click removes in any case (part of ``comp``); model: the object's intensity model;
    noise: the image's noise level (intensity units); sp: in-plane spacing (mm).

    The click's tissue is sampled within 0.7 times its depth (at least 1.5 voxels). When its
    density overlaps the object's foreground density by ``max_overlap`` (Bhattacharyya
    coefficient) or more, the click's tissue is the target's and nothing is returned. Otherwise
    the part of ``comp`` more likely under the click's density (log-ratio smoothed by 0.7
    voxel), at most ``depth`` times the click's depth (plus a voxel) deep and connected to
    ``seed``, with ``seed``. All arrays are ``(X, Y)`` on the crop.
    """
    px, py = click
    rho = float(inside[px, py])
    sample = disk(comp.shape, px, py, max(0.7 * rho, 1.5 * min(sp)), sp) & comp
    density = model.density(img[sample], noise)
    if model.overlap(density) >= max_overlap:
        return np.zeros_like(comp)
    lr = ndi.gaussian_filter(model.log_ratio_to_fg(density, img), 0.7)
    cand = comp & (lr > 0) & (inside <= depth * rho + max(sp))
    return keep_components(cand | seed, seed)
