"""segloop's slice prompts as SAM-Med3D's 3D clicks (the model takes 3D points only).

- a point ``(x, y)`` on slice z is the 3D click ``(x, y, z)`` with its label;
- a box on slice z becomes ONE positive click at its centre ``((x0+x1)//2, (y0+y1)//2, z)``
  (SAM-Med3D was trained without box prompts; the centre is where a user clicks first);
- a 2D mask (``propagate``'s ``mask2d``, a slice stored by ``set_mask``) becomes a positive click
  at its most interior voxel (:func:`interior_point`: largest distance to the mask border).

Numpy and scipy only; must not import torch, the session, the CLI, FastAPI or Celery.
"""

from __future__ import annotations

import numpy as np

from segloop.types import BoolArray, Click, Prompts

__all__ = ["Click", "interior_point", "prompts_to_clicks"]


def prompts_to_clicks(z: int, prompts: Prompts) -> list[Click]:
    """Slice prompts -> 3D clicks (a box becomes a positive click at its centre)."""
    out: list[Click] = []
    if prompts.box is not None:
        x0, y0, x1, y1 = prompts.box
        out.append(Click((x0 + x1) // 2, (y0 + y1) // 2, z, 1))
    for (x, y), lab in zip(prompts.points.tolist(), prompts.labels.tolist(), strict=True):
        out.append(Click(int(x), int(y), z, int(lab)))
    return out


def interior_point(mask2d: BoolArray) -> tuple[int, int]:
    """The voxel of a 2D mask farthest from its border."""
    from scipy.ndimage import distance_transform_edt

    dist = distance_transform_edt(np.pad(mask2d, 1))[1:-1, 1:-1]
    x, y = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)
