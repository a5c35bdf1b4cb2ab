"""PNG rendering of one axial slice of a label map (``GET .../result?format=png``).

Pixel (row r, column c) shows canonical voxel (x=c, y=Y-1-r): anterior at the top, x
increasing to the right, as the label map is indexed. Imports numpy, Pillow and the job
store's records only.
Must not import segloop.cli, segloop.protocols, segloop.worker, segloop.web, segloop.ism,
segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from segloop.jobs.records import ObjectRecord
from segloop.types import validate_slice

__all__ = ["slice_png"]


def _rgba(colour: str) -> tuple[int, int, int, int]:
    c = colour.lstrip("#")
    a = int(c[6:8], 16) if len(c) == 8 else 255
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16), a


def slice_png(labels: np.ndarray[Any, Any], z: int, objects: list[ObjectRecord],
              style: str = "colour") -> bytes:
    """PNG bytes of slice z of a ``(X, Y, Z)`` uint8 label map.

    style "colour": RGBA, each object's colour, transparent background; "labels": 8-bit grey
    whose value is the label value.
    """
    from PIL import Image

    validate_slice(z, labels.shape)
    sl = np.ascontiguousarray(labels[:, :, z].T[::-1])
    if style == "labels":
        img = Image.fromarray(sl.astype(np.uint8), mode="L")
    else:
        rgba = np.zeros((*sl.shape, 4), np.uint8)
        for o in objects:
            rgba[sl == o.label_value] = _rgba(o.colour)
        img = Image.fromarray(rgba, mode="RGBA")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
