"""Load an object's templates (SAM-6D's layout), rendering them first when the folder is empty.

A template folder holds ``rgb_{i}.png``, ``mask_{i}.png``, ``xyz_{i}.npy`` for i = 0..N-1 with
N one of SAM-6D's view counts (42, 162, 642); view i has the pose of :func:`poses.cam_poses`.
Imports numpy, PIL and segloop.ism; never torch or FastAPI.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from segloop.errors import InputError

from .mesh import Mesh, read_ply
from .poses import cam_poses, level_for_views
from .render import render_templates
from .types import Templates

__all__ = ["count_templates", "load_templates"]

log = logging.getLogger("segloop.ism.templates")

#: CAD points sampled for the geometric score (SAM-6D: 2048)
N_POINTS = 2048


def count_templates(template_dir: Path) -> int:
    """How many complete views (rgb, mask and xyz present) the folder has, counting from 0."""
    n = 0
    while all((template_dir / f"{k}_{n}.{e}").is_file()
              for k, e in (("rgb", "png"), ("mask", "png"), ("xyz", "npy"))):
        n += 1
    return n


def load_templates(template_dir: Path, cad_path: Path, seed: int = 0) -> Templates:
    """The templates in ``template_dir`` (rendered from ``cad_path`` first when there are none).

    Raises InputError for a folder with a view count that is not one of SAM-6D's levels."""
    mesh: Mesh = read_ply(cad_path)
    n = count_templates(template_dir)
    if n == 0:
        log.info("no templates in %s: rendering them from %s", template_dir, cad_path)
        n = render_templates(mesh, template_dir, level=0)
    try:
        level = level_for_views(n)
    except ValueError:
        raise InputError(f"{template_dir} has {n} complete templates: expected 42, 162 or 642 "
                         "(rgb_i.png, mask_i.png, xyz_i.npy); empty the folder to re-render") from None
    rgb, masks = [], []
    for i in range(n):
        try:
            rgb.append(np.asarray(Image.open(template_dir / f"rgb_{i}.png").convert("RGB")))
            masks.append(np.asarray(Image.open(template_dir / f"mask_{i}.png").convert("L")) > 127)
        except OSError as exc:
            raise InputError(f"template {i} in {template_dir} is not a readable PNG ({exc})") from None
        if not masks[-1].any():
            raise InputError(f"template mask_{i}.png in {template_dir} is empty")
    rotations = np.transpose(cam_poses(level)[:, :3, :3], (0, 2, 1))  # object → camera
    points = mesh.sample_points(N_POINTS, np.random.default_rng(seed))
    return Templates(rgb=np.stack(rgb), masks=np.stack(masks), rotations=rotations, points=points,
                     source=str(template_dir))
