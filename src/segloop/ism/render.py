"""Offscreen template renderer: a numpy z-buffer rasteriser (no GPU, no display, no GL library).

Why not pyrender/OSMesa or Open3D: templates need exact per-pixel object coordinates (``xyz``),
which a GL colour buffer quantises unless one writes float shaders; OSMesa needs the Debian
``libosmesa6`` plus PyOpenGL pinned by pyrender, and Open3D's CPU offscreen renderer needs its
headless (OSMesa) build, a ~400 MB wheel. A vectorised rasteriser over triangles grouped by
screen size renders SAM-6D's 42 views of a 45k-triangle CAD model in a few seconds, has no
dependency beyond numpy and is tested against a hand-computed projection.

Camera and units, as SAM-6D's ``Render/render_custom_templates.py`` (BlenderProc defaults):
512×512 images, horizontal field of view 0.691111 rad (fx = fy = 256 / tan(0.3455555) ≈ 711.1 px),
principal point (255.5, 255.5) (pixel centres at integer coordinates); the object is scaled by
1 / (2·radius) and the camera sits 2 units away, i.e. in the model's own units (mm) the camera is
4·radius from the origin. OpenCV camera frame (x right, y down, z forward). Outputs per view i:
``rgb_{i}.png`` (uint8 RGB, vertex colours with a head-light, black background), ``mask_{i}.png``
(uint8, 255 on the object) and ``xyz_{i}.npy`` (float16 H×W×3 object coordinates in the model's
units — mm — zero on background; SAM-6D's pose model divides them by 1000).
Imports numpy, PIL and segloop.ism.{mesh,poses}; never torch or FastAPI.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .mesh import Mesh
from .poses import cam_poses

__all__ = ["TEMPLATE_K", "TEMPLATE_SIZE", "Rendered", "project", "rasterize", "render_templates",
           "render_view"]

log = logging.getLogger("segloop.ism.render")

#: template image size (width = height), BlenderProc's default resolution
TEMPLATE_SIZE = 512
_F = (TEMPLATE_SIZE / 2) / np.tan(0.691111 / 2)
#: template camera intrinsics (pixels)
TEMPLATE_K = np.array([[_F, 0.0, (TEMPLATE_SIZE - 1) / 2], [0.0, _F, (TEMPLATE_SIZE - 1) / 2],
                       [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class Rendered:
    """One view: ``rgb`` (H, W, 3) uint8, ``mask`` (H, W) bool, ``xyz`` (H, W, 3) float32 object coords."""

    rgb: np.ndarray
    mask: np.ndarray
    xyz: np.ndarray


def project(points: np.ndarray, cam_pose: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project (N, 3) object points seen from a camera-to-object pose: (N, 2) (x, y) pixels, (N,) depth."""
    R, t = cam_pose[:3, :3], cam_pose[:3, 3]
    pc = (points - t) @ R  # = R^T (p - t) per row
    uv = pc[:, :2] / pc[:, 2:3] * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]])
    return uv, pc[:, 2]


def rasterize(uv: np.ndarray, depth: np.ndarray, faces: np.ndarray, height: int, width: int,
              max_candidates: int = 4_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Z-buffer triangles: returns (H, W) int64 face index (-1 = empty) and (H, W, 3) barycentrics.

    ``uv`` (N, 2) pixel coordinates (pixel centres at integers), ``depth`` (N,) positive camera z.
    Barycentrics are perspective-correct (weights of the three vertices of the visible face)."""
    tri = uv[faces]  # F, 3, 2
    zt = depth[faces]
    keep = np.all(zt > 1e-9, axis=1)
    x0 = np.clip(np.ceil(tri[..., 0].min(1)), 0, width)
    x1 = np.clip(np.floor(tri[..., 0].max(1)), -1, width - 1)
    y0 = np.clip(np.ceil(tri[..., 1].min(1)), 0, height)
    y1 = np.clip(np.floor(tri[..., 1].max(1)), -1, height - 1)
    keep &= (x1 >= x0) & (y1 >= y0)
    fid = np.nonzero(keep)[0]
    size = np.maximum(x1 - x0, y1 - y0)[fid].astype(np.int64) + 1
    pix_all: list[np.ndarray] = []
    z_all: list[np.ndarray] = []
    f_all: list[np.ndarray] = []
    b_all: list[np.ndarray] = []
    k = 1
    while len(fid):
        if k > 32:  # large triangles one by one on their exact (h, w) box: no padding to k×k
            groups = [(fid[i:i + 1], int(y1[fid[i]] - y0[fid[i]]) + 1, int(x1[fid[i]] - x0[fid[i]]) + 1)
                      for i in range(len(fid))]
            fid = fid[:0]
        else:
            sel = size <= k
            group, fid, size = fid[sel], fid[~sel], size[~sel]
            step = max(1, max_candidates // (k * k))
            groups = [(group[s:s + step], k, k) for s in range(0, len(group), step)]
        for g, gh, gw in groups:
            oy, ox = np.mgrid[0:gh, 0:gw]
            px = x0[g][:, None, None] + ox
            py = y0[g][:, None, None] + oy
            a, b, c = (tri[g, i][:, :, None, None] for i in range(3))
            area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
            ok_area = np.abs(area) > 1e-12
            area = np.where(ok_area, area, 1.0)
            w0 = ((b[:, 0] - px) * (c[:, 1] - py) - (b[:, 1] - py) * (c[:, 0] - px)) / area
            w1 = ((c[:, 0] - px) * (a[:, 1] - py) - (c[:, 1] - py) * (a[:, 0] - px)) / area
            w2 = 1.0 - w0 - w1
            inside = (w0 >= -1e-9) & (w1 >= -1e-9) & (w2 >= -1e-9) & ok_area
            inside &= (px <= x1[g][:, None, None]) & (py <= y1[g][:, None, None])
            ti, yy, xx = np.nonzero(inside)
            if not len(ti):
                continue
            z = zt[g][ti]
            bw = np.stack([w0[ti, yy, xx], w1[ti, yy, xx], w2[ti, yy, xx]], axis=1) / z
            inv_z = bw.sum(1)
            pix_all.append(py[ti, yy, xx].astype(np.int64) * width + px[ti, yy, xx].astype(np.int64))
            z_all.append(1.0 / inv_z)
            f_all.append(g[ti])
            b_all.append(bw / inv_z[:, None])
        k *= 2
    face_map = np.full(height * width, -1, dtype=np.int64)
    bary = np.zeros((height * width, 3))
    if pix_all:
        pix, zz = np.concatenate(pix_all), np.concatenate(z_all)
        order = np.lexsort((zz, pix))
        first = order[np.r_[True, pix[order][1:] != pix[order][:-1]]]
        face_map[pix[first]] = np.concatenate(f_all)[first]
        bary[pix[first]] = np.concatenate(b_all)[first]
    return face_map.reshape(height, width), bary.reshape(height, width, 3)


def render_view(mesh: Mesh, cam_pose: np.ndarray, K: np.ndarray = TEMPLATE_K,
                size: tuple[int, int] = (TEMPLATE_SIZE, TEMPLATE_SIZE)) -> Rendered:
    """Render ``mesh`` (model units) seen from ``cam_pose`` (camera-to-object, model units); size = (H, W)."""
    h, w = size
    uv, z = project(mesh.vertices, cam_pose, K)
    face_map, bary = rasterize(uv, z, mesh.faces, h, w)
    mask = face_map >= 0
    f = face_map[mask]
    vid = mesh.faces[f]
    wts = bary[mask]
    xyz = np.zeros((h, w, 3), dtype=np.float32)
    xyz[mask] = np.einsum("nk,nkd->nd", wts, mesh.vertices[vid])
    col = np.einsum("nk,nkd->nd", wts, mesh.colors[vid])
    tri = mesh.vertices[mesh.faces[f]]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    view = cam_pose[:3, 3][None, :] - xyz[mask]
    view /= np.maximum(np.linalg.norm(view, axis=1, keepdims=True), 1e-12)
    shade = 0.35 + 0.65 * np.abs(np.sum(normal * view, axis=1))  # head-light, two-sided
    rgb = np.zeros((h, w, 3), dtype=np.uint8)
    rgb[mask] = np.clip(np.round(col * shade[:, None] * 255), 0, 255).astype(np.uint8)
    return Rendered(rgb=rgb, mask=mask, xyz=xyz)


def render_templates(mesh: Mesh, out_dir: Path, level: int = 0,
                     on_progress: Callable[[int, int], None] | None = None) -> int:
    """Write SAM-6D's templates of ``mesh`` into ``out_dir``; returns the number of views.

    Files ``rgb_{i}.png``, ``mask_{i}.png``, ``xyz_{i}.npy`` for i in 0..N-1 (N = 42 at level 0),
    each written to a temporary name and renamed (a half-written folder never looks complete)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    poses = cam_poses(level, distance=4.0 * mesh.radius)
    for i, pose in enumerate(poses):
        r = render_view(mesh, pose)
        tmp = out_dir / f".tmp_{i}"
        Image.fromarray(r.rgb).save(tmp.with_suffix(".png"))
        tmp.with_suffix(".png").replace(out_dir / f"rgb_{i}.png")
        Image.fromarray(r.mask.astype(np.uint8) * 255).save(tmp.with_suffix(".png"))
        tmp.with_suffix(".png").replace(out_dir / f"mask_{i}.png")
        np.save(tmp.with_suffix(".npy"), r.xyz.astype(np.float16))
        tmp.with_suffix(".npy").replace(out_dir / f"xyz_{i}.npy")
        if on_progress is not None:
            on_progress(i + 1, len(poses))
    log.info("rendered %d templates into %s", len(poses), out_dir)
    return len(poses)
