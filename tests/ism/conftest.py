"""Fixtures of the ISM tests: the SAM-6D example scene and tiny synthetic meshes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SAM6D = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "sam6d").resolve()


@pytest.fixture
def sam6d_dir() -> Path:
    """../shared/data/sam6d (SAM-6D's Data/Example); skips when absent."""
    if not (SAM6D / "obj_000005.ply").is_file():
        pytest.skip(f"SAM-6D example scene not found at {SAM6D}")
    return SAM6D


def write_ply(path: Path, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None,
              binary: bool = False) -> Path:
    """Write a tiny PLY (ascii or binary little endian) with optional uint8 vertex colours."""
    props = ["property float x", "property float y", "property float z"]
    if colors is not None:
        props += ["property uchar red", "property uchar green", "property uchar blue"]
    head = "\n".join(["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
                      f"element vertex {len(vertices)}", *props, f"element face {len(faces)}",
                      "property list uchar int vertex_indices", "end_header"]) + "\n"
    if binary:
        vdt = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
        if colors is not None:
            vdt += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        v = np.zeros(len(vertices), dtype=vdt)
        v["x"], v["y"], v["z"] = vertices.T
        if colors is not None:
            v["red"], v["green"], v["blue"] = colors.T
        f = np.zeros(len(faces), dtype=[("n", "u1"), ("i", "<i4", (3,))])
        f["n"], f["i"] = 3, faces
        path.write_bytes(head.encode() + v.tobytes() + f.tobytes())
    else:
        rows = [" ".join(map(str, [*p, *(colors[i] if colors is not None else [])]))
                for i, p in enumerate(vertices.tolist())]
        rows += ["3 " + " ".join(map(str, f)) for f in faces.tolist()]
        path.write_text(head + "\n".join(rows) + "\n")
    return path


def box_mesh(half: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """An axis-aligned box centred at the origin: 8 vertices, 12 outward triangles."""
    hx, hy, hz = half
    v = np.array([[x, y, z] for x in (-hx, hx) for y in (-hy, hy) for z in (-hz, hz)], dtype=float)
    f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                  [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    return v, f


def synthetic_scene(mesh_vertices: np.ndarray, faces: np.ndarray, color: tuple[int, int, int],
                    distance: float = 800.0, view: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                       np.ndarray]:
    """A 480×640 RGB-D frame of a mesh seen from template view ``view`` at ``distance`` mm, on a
    textured background plane 400 mm behind it. Returns rgb, depth (uint16 mm), K, true mask."""
    from segloop.ism.mesh import Mesh
    from segloop.ism.poses import cam_poses
    from segloop.ism.render import render_view

    K = np.array([[572.4, 0.0, 325.3], [0.0, 573.6, 242.0], [0.0, 0.0, 1.0]])
    cols = np.tile(np.array(color, dtype=float) / 255, (len(mesh_vertices), 1))
    pose = cam_poses(0, distance=distance)[view]
    r = render_view(Mesh(mesh_vertices, faces, cols), pose, K, size=(480, 640))
    pc = (r.xyz.reshape(-1, 3).astype(np.float64) - pose[:3, 3]) @ pose[:3, :3]
    z = pc[:, 2].reshape(480, 640)
    rng = np.random.default_rng(1)
    rgb = (rng.integers(60, 120, size=(480 // 16, 640 // 16, 3)).repeat(16, 0).repeat(16, 1)).astype(np.uint8)
    depth = np.full((480, 640), distance + 400.0)
    rgb[r.mask] = r.rgb[r.mask]
    depth[r.mask] = z[r.mask]
    return rgb, np.round(depth).astype(np.uint16), K, r.mask
