"""SAM-6D's template viewpoints: camera poses on a subdivided icosphere around the object.

Where the numbers come from: SAM-6D (``utils/poses/create_template_poses.py``) builds Blender's
default icosphere (an icosahedron subdivided once: 42 vertices, one at each pole, one ring
vertex at azimuth 0 in the +x direction), subdivides it ``level`` more times (level 0: 42 views,
1: 162, 2: 642), puts a camera at each unit vertex scaled to 1000 mm looking at the origin, and
saves the camera-to-world matrices as ``cam_poses_level{level}.npy`` (object poses are their
inverses). We rebuild the same vertices here (midpoint subdivision + projection to the sphere is
what Blender's subdivide-and-normalise does) and the same look-at frame. SAM-6D orders the views
by (elevation, azimuth) of Blender's float32 vertices, so vertices of one ring are ordered by
rounding noise; :data:`SAM6D_LEVEL0_ORDER` records that order for level 0 (checked against the
published file: every matrix equal to 1e-4), finer levels use a plain (elevation, azimuth) sort.

Camera convention (OpenCV): columns of the rotation are the camera's x (image right), y (image
down) and z (viewing direction, towards the object) axes in object coordinates. Imports numpy only.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import numpy as np

__all__ = ["SAM6D_LEVEL0_ORDER", "cam_poses", "icosphere", "level_for_views", "look_at"]

#: SAM-6D's level-0 view order as indices into this module's (elevation, azimuth) sort
SAM6D_LEVEL0_ORDER: tuple[int, ...] = (
    0, 1, 3, 4, 5, 2, 8, 10, 6, 7, 9, 11, 13, 14, 15, 12, 17, 18, 19, 20, 21,
    22, 23, 24, 25, 16, 29, 26, 27, 28, 30, 32, 34, 35, 31, 33, 39, 36, 37, 38, 40, 41,
)


def _icosahedron() -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Blender's icosahedron: poles on z, upper ring at azimuths k*72° (from +x), lower at 36°+k*72°."""
    z = 1 / np.sqrt(5.0)
    r = 2 / np.sqrt(5.0)
    verts = [(0.0, 0.0, 1.0)]
    verts += [(r * np.cos(np.radians(72 * k)), r * np.sin(np.radians(72 * k)), z) for k in range(5)]
    verts += [(r * np.cos(np.radians(36 + 72 * k)), r * np.sin(np.radians(36 + 72 * k)), -z)
              for k in range(5)]
    verts.append((0.0, 0.0, -1.0))
    faces: list[tuple[int, int, int]] = []
    for k in range(5):
        u0, u1 = 1 + k, 1 + (k + 1) % 5
        l0, l1 = 6 + k, 6 + (k + 1) % 5
        faces += [(0, u0, u1), (u0, l0, u1), (u1, l0, l1), (l0, 11, l1)]
    return np.array(verts), faces


def _midpoint(pts: list[np.ndarray], cache: dict[tuple[int, int], int], a: int, b: int) -> int:
    """Index of the unit-sphere midpoint of edge (a, b), appended to ``pts`` the first time."""
    key = (min(a, b), max(a, b))
    if key not in cache:
        m = (pts[a] + pts[b]) / 2
        pts.append(m / np.linalg.norm(m))
        cache[key] = len(pts) - 1
    return cache[key]


def icosphere(subdivisions: int) -> np.ndarray:
    """(N, 3) unit vertices of the icosahedron after ``subdivisions`` midpoint subdivisions.

    N = 10 * 4**subdivisions + 2 (0: 12, 1: 42 = Blender's default, 2: 162, 3: 642)."""
    verts, faces = _icosahedron()
    pts: list[np.ndarray] = list(verts)
    for _ in range(subdivisions):
        cache: dict[tuple[int, int], int] = {}
        new: list[tuple[int, int, int]] = []
        for a, b, c in faces:
            ab, bc, ca = (_midpoint(pts, cache, i, j) for i, j in ((a, b), (b, c), (c, a)))
            new += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new
    return np.array(pts, dtype=np.float64)


def look_at(location: np.ndarray) -> np.ndarray:
    """4x4 camera-to-world matrix of a camera at ``location`` looking at the origin (SAM-6D's frame).

    z = unit vector towards the origin; x = (0, 0, -1) × z normalised (with (0, -1, 0) instead
    when the camera sits on the z axis); y = z × x."""
    fwd = -location / np.linalg.norm(location)
    tmp = np.array([0.0, 0.0, -1.0])
    if min(np.linalg.norm(location - tmp), np.linalg.norm(location + tmp)) < 1e-3 * max(
            1.0, float(np.linalg.norm(location))) or np.linalg.norm(np.cross(tmp, fwd)) < 1e-6:
        tmp = np.array([0.0, -1.0, 0.0])
    right = np.cross(tmp, fwd)
    right /= np.linalg.norm(right)
    up = np.cross(fwd, right)
    up /= np.linalg.norm(up)
    mat = np.eye(4)
    mat[:3, 0], mat[:3, 1], mat[:3, 2], mat[:3, 3] = right, up, fwd, location
    return mat


def _sorted_vertices(level: int) -> np.ndarray:
    v = icosphere(level + 1)
    el = np.round(np.arctan2(v[:, 2], np.hypot(v[:, 0], v[:, 1])), 6)
    az = np.round(np.arctan2(v[:, 0], v[:, 1]), 6)
    return v[np.lexsort((az, el))]


def cam_poses(level: int = 0, distance: float = 1000.0) -> np.ndarray:
    """(N, 4, 4) camera-to-object poses of SAM-6D's template level (0: 42 views, 1: 162, 2: 642).

    Camera centres at ``distance`` (SAM-6D: 1000, in mm) from the origin; level 0 in SAM-6D's order."""
    if level < 0:
        raise ValueError("template level must be >= 0")
    verts = _sorted_vertices(level)
    if level == 0:
        verts = verts[list(SAM6D_LEVEL0_ORDER)]
    return np.stack([look_at(v * distance) for v in verts])


def level_for_views(n_views: int) -> int:
    """The pose level with exactly ``n_views`` views (42, 162, 642, ...); ValueError otherwise."""
    for level in range(5):
        if 10 * 4 ** (level + 1) + 2 == n_views:
            return level
    raise ValueError(f"--views must be one of 42, 162, 642, 2562 (SAM-6D's levels), not {n_views}")
