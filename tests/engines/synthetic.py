"""Tiny synthetic volumes for engine tests: ellipsoids in noise, on an anisotropic grid.

Everything is built on the canonical (x, y, z) grid; :func:`phantom` also returns a
:class:`Volume` stored in LPS order (x and y flipped) so engines must use its canonical view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segloop.io.volume import Volume

__all__ = ["Phantom", "ellipsoid", "phantom"]


def ellipsoid(shape: tuple[int, int, int], spacing: tuple[float, float, float],
              centre_vox: tuple[float, float, float], radii_mm: tuple[float, float, float]) -> np.ndarray:
    """Bool ``(X, Y, Z)`` ellipsoid with centre in voxels and radii in mm."""
    grids = np.ogrid[: shape[0], : shape[1], : shape[2]]
    r2 = sum(((g - c) * s / r) ** 2 for g, c, s, r in zip(grids, centre_vox, spacing, radii_mm, strict=True))
    return np.asarray(r2 <= 1.0)


@dataclass(frozen=True)
class Phantom:
    """A test volume: ``volume`` (source order LPS), and truths on its canonical grid."""

    volume: Volume
    bright: np.ndarray
    dark: np.ndarray
    canonical_data: np.ndarray


def phantom(shape: tuple[int, int, int] = (48, 44, 16),
            spacing: tuple[float, float, float] = (1.0, 1.0, 2.5),
            noise: float = 12.0, seed: int = 0) -> Phantom:
    """A bright ellipsoid (intensity 200) and a dark one (20) in a background of 100 + noise.

    The ellipsoids stay clear of each other and of the volume's borders. ``volume.data`` is
    stored with x and y reversed (an LPS affine) so that ``volume.canonical().data`` equals
    ``canonical_data``.
    """
    rng = np.random.default_rng(seed)
    nx, ny, nz = shape
    zc = (nz - 1) / 2
    bright = ellipsoid(shape, spacing, (nx * 0.3, ny * 0.5, zc), (9.0, 8.0, 12.0))
    dark = ellipsoid(shape, spacing, (nx * 0.72, ny * 0.45, zc), (7.0, 9.0, 10.0))
    img = np.full(shape, 100.0)
    img[bright] = 200.0
    img[dark] = 20.0
    img = img + rng.normal(0.0, noise, size=shape)
    can = img.astype(np.float32)
    src = np.ascontiguousarray(can[::-1, ::-1, :])
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [(nx - 1) * spacing[0], (ny - 1) * spacing[1], 0.0]
    vol = Volume(data=src, affine=affine, source_format="npz", modality="MR")
    return Phantom(volume=vol, bright=bright, dark=dark, canonical_data=can)
