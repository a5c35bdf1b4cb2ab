"""A synthetic vertebral column for the sheet tests: a textured column crossed by tilted dark
plates (the discs), on 2 mm slices."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

SPACING = (1.0, 1.0, 2.0)


def plated_column(nz: int, plates: tuple[float, ...]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.random.Generator]:
    """A textured column (radius 12 mm; 200 + an in-plane pattern of sd 40, the same on every
    slice, like bone) on a background of 60, ``nz`` slices of 48 x 48 voxels, with plates 2
    slices thick of intensity 150, tilted (0.1 slice per voxel along x), centred at
    ``plates``. Returns the image before noise, the column, each voxel's tilted z, and the
    random generator to draw the noise from (seed 0, after the texture)."""
    rng = np.random.default_rng(0)
    nx, ny = 48, 48
    x, y, z = np.ogrid[:nx, :ny, :nz]
    r = np.sqrt(((x - 24) * SPACING[0]) ** 2 + ((y - 24) * SPACING[1]) ** 2)
    col = np.broadcast_to(r <= 12, (nx, ny, nz))
    tex = ndi.gaussian_filter(rng.normal(0, 1, (nx, ny)), 2.0)
    tex = 40.0 * tex / tex.std()
    img = np.full((nx, ny, nz), 60.0)
    img[col] = (200.0 + np.broadcast_to(tex[:, :, None], (nx, ny, nz)))[col]
    zc = z - 0.1 * (x - 24)
    for p in plates:
        img[col & (np.abs(zc - p) < 1.0)] = 150.0
    return img, np.asarray(col), np.asarray(zc), rng
