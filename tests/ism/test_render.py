"""Template poses, projection and the z-buffer renderer, against hand-computed numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segloop.cli import main
from segloop.errors import InputError, UnsupportedFormatError
from segloop.ism.mesh import Mesh, read_ply
from segloop.ism.poses import cam_poses, icosphere, level_for_views
from segloop.ism.render import TEMPLATE_K, project, render_templates, render_view

from .conftest import box_mesh, write_ply


def test_icosphere_counts_and_unit_length() -> None:
    for sub, n in [(0, 12), (1, 42), (2, 162)]:
        v = icosphere(sub)
        assert v.shape == (n, 3)
        assert np.allclose(np.linalg.norm(v, axis=1), 1.0)
    assert level_for_views(42) == 0 and level_for_views(162) == 1 and level_for_views(642) == 2
    with pytest.raises(ValueError, match="42, 162"):
        level_for_views(50)


def test_level0_matches_sam6d_published_poses() -> None:
    """Values read from SAM-6D's cam_poses_level0.npy (views 0, 1 and 41)."""
    p = cam_poses(0)
    assert p.shape == (42, 4, 4)
    assert np.allclose(p[0], [[-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 1, -1000], [0, 0, 0, 1]], atol=1e-6)
    assert np.allclose(p[1, :3, :3], [[0.9511, 0.2629, 0.1625], [-0.309, 0.809, 0.5],
                                      [0.0, -0.5257, 0.8507]], atol=1e-4)
    assert np.allclose(p[1, :3, 3], [-162.4556, -499.9953, -850.6544], atol=1e-2)
    assert np.allclose(p[41, :3, 3], [0, 0, 1000], atol=1e-6)
    for m in p:  # rotations, and the optical axis looks at the origin
        assert np.allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-9)
        assert np.allclose(m[:3, 2], -m[:3, 3] / 1000, atol=1e-9)
    assert len(np.unique(np.round(cam_poses(1)[:, :3, 3]), axis=0)) == 162


def test_projection_hand_computed() -> None:
    # view 0: camera at (0, 0, -400) with axes x=(-1,0,0), y=(0,-1,0), z=(0,0,1)
    pose = cam_poses(0, distance=400.0)[0]
    uv, z = project(np.array([[10.0, 0.0, 0.0], [0.0, -20.0, 100.0]]), pose, TEMPLATE_K)
    f = 256 / np.tan(0.691111 / 2)
    assert np.allclose(z, [400.0, 500.0])
    assert np.allclose(uv[0], [255.5 - f * 10 / 400, 255.5])
    assert np.allclose(uv[1], [255.5, 255.5 + f * 20 / 500])


def test_render_square_hand_computed(tmp_path: Path) -> None:
    v = np.array([[-20, -20, 0], [20, -20, 0], [20, 20, 0], [-20, 20, 0]], dtype=float)
    mesh = read_ply(write_ply(tmp_path / "sq.ply", v, np.array([[0, 1, 2], [0, 2, 3]]),
                              colors=np.tile([[200, 10, 10]], (4, 1))))
    dist = 4 * mesh.radius
    r = render_view(mesh, cam_poses(0, distance=dist)[0])
    f = TEMPLATE_K[0, 0]
    edge = 255.5 - f * 20 / dist  # the square's left/right edges, in pixels
    row = r.mask[255]
    assert not row[int(np.floor(edge)) - 1] and row[int(np.ceil(edge)) + 1] and row[255]
    assert abs(int(row.sum()) - (2 * (255.5 - edge))) <= 2
    # pixel (x=300, y=255): back-projected on the plane z=0, then to object coordinates
    xc, yc = (300 - 255.5) / f * dist, (255 - 255.5) / f * dist
    assert np.allclose(r.xyz[255, 300], [-xc, -yc, 0.0], atol=1e-3)
    assert r.rgb[255, 255, 0] > 150 and r.rgb[255, 255, 1] < 20
    assert r.rgb[0, 0].tolist() == [0, 0, 0]


def test_zbuffer_keeps_the_near_face(tmp_path: Path) -> None:
    v, f = box_mesh((10, 10, 10))
    mesh = Mesh(vertices=v, faces=f, colors=np.full_like(v, 0.5))
    r = render_view(mesh, cam_poses(0, distance=100.0)[0])  # camera at z=-100: sees face z=-10
    assert np.allclose(r.xyz[255, 255], [0, 0, -10], atol=0.2)


def test_binary_ply_and_bad_files(tmp_path: Path) -> None:
    v, f = box_mesh((1, 2, 3))
    m = read_ply(write_ply(tmp_path / "b.ply", v, f, binary=True))
    assert m.vertices.shape == (8, 3) and m.faces.shape == (12, 3) and np.allclose(m.colors, 0.7)
    assert m.radius == pytest.approx(np.sqrt(14))
    (tmp_path / "x.obj").write_text("v 0 0 0\n")
    with pytest.raises(UnsupportedFormatError, match="not a PLY"):
        read_ply(tmp_path / "x.obj")
    with pytest.raises(InputError, match="does not exist"):
        read_ply(tmp_path / "missing.ply")


def test_cli_render_layout_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    v, f = box_mesh((30, 20, 10))
    cad = write_ply(tmp_path / "box.ply", v, f, colors=np.tile([[0, 200, 0]], (8, 1)))
    assert main(["ism", "render", str(cad), str(tmp_path / "t")]) == 0
    for i in (0, 41):
        rgb = np.array(Image.open(tmp_path / "t" / f"rgb_{i}.png"))
        mask = np.array(Image.open(tmp_path / "t" / f"mask_{i}.png"))
        xyz = np.load(tmp_path / "t" / f"xyz_{i}.npy")
        assert rgb.shape == (512, 512, 3) and rgb.dtype == np.uint8
        assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
        assert xyz.shape == (512, 512, 3) and xyz.dtype == np.float16
        assert np.abs(xyz[mask > 0]).max() <= 30.01 and not xyz[mask == 0].any()
    assert len(list((tmp_path / "t").glob("xyz_*.npy"))) == 42
    assert main(["ism", "render", str(cad), str(tmp_path / "u"), "--views", "50"]) == 2
    assert main(["ism", "render", str(tmp_path / "nope.ply"), str(tmp_path / "u")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_render_example_can(tmp_path: Path, sam6d_dir: Path) -> None:
    n = render_templates(read_ply(sam6d_dir / "obj_000005.ply"), tmp_path, level=0)
    assert n == 42
    mask = np.array(Image.open(tmp_path / "mask_20.png")) > 0
    xyz = np.load(tmp_path / "xyz_20.npy").astype(np.float32)
    assert 0.02 < mask.mean() < 0.3
    assert np.abs(xyz[mask]).max() < 100  # the can's extent is about ±97 mm
