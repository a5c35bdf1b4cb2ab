"""2D models see coronal and sagittal slices as radiologists view them (issue 15).

A prompt on a coronal or sagittal slice runs in an engine session opened on a transposed view
of the canonical volume (segloop.jobs.planesessions: coronal ``(X, Z, Y)``, sagittal
``(Y, Z, X)``), and the engines feed each slice of their volume in the radiological view
(segloop.io.radiological). Together that must give, with no per-plane code in the engines:

* coronal: superior at the top, the patient's right on the image's left;
* sagittal: superior at the top, anterior on the image's left.

Checked on random weights of the real architectures (MedSAM2's SAM 2 and MedSAM): the image the
model gets has a marker placed right/anterior-superior in its top-left corner, a box drawn
around the marker reaches the model there, and a mask the model "draws" in its input's
top-left corner comes back on the marker's voxels of the canonical volume.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from segloop.engines.medsam import MedSAMEngine
from segloop.engines.medsam.testing import install_tiny_medsam
from segloop.engines.sam2 import MedSAM2Engine
from segloop.engines.sam2.testing import install_tiny_weights
from segloop.io.volume import Volume
from segloop.jobs.planesessions import PlaneSessions, view_volume
from segloop.types import Plane, Prompts

SHAPE = (20, 24, 16)  # canonical RAS (X, Y, Z): x to the patient's right, y anterior, z superior
#: the marker: right, anterior, superior corner region of the volume
MARK = (slice(14, 20), slice(18, 24), slice(11, 16))


def _volume() -> Volume:
    rng = np.random.default_rng(0)
    data = rng.normal(0.0, 20.0, SHAPE).astype(np.float32) - 200.0
    data[MARK] += 400.0
    return Volume(data=data, affine=np.diag([0.8, 0.9, 2.5, 1.0]), source_format="npz",
                  modality="CT")


def _marker_view(plane: Plane) -> np.ndarray:
    """The marker in ``plane``'s view of the volume, (u, v, slice)."""
    m = np.zeros(SHAPE, bool)
    m[MARK] = True
    return np.asarray(plane.to_view(m))


# the slice through the marker and its box on that slice, in the plane's (u, v) order:
# coronal slices y (u = x, v = z), sagittal slices x (u = y, v = z)
CASES = {
    Plane.CORONAL: (20, (14, 11, 19, 15)),
    Plane.SAGITTAL: (16, (18, 11, 23, 15)),
}


def _sessions(engine: Any) -> PlaneSessions:
    vol = _volume()
    return PlaneSessions(lambda plane: engine.open(view_volume(vol, plane)), SHAPE)


def _top_left(img: np.ndarray, marker_hw: np.ndarray) -> None:
    """The marker is in the image's top-left corner and brighter there than anywhere else."""
    h, w = img.shape[:2]
    rows, cols = np.nonzero(marker_hw)
    assert rows.max() < h / 2 and cols.max() < w / 2, (rows, cols)
    assert rows.min() == 0 and cols.min() == 0
    assert img[marker_hw].mean() > img[~marker_hw].mean() + 100


@pytest.mark.parametrize("plane", [Plane.CORONAL, Plane.SAGITTAL])
def test_sam2_family_sees_and_answers_in_the_radiological_view(plane: Plane,
                                                              monkeypatch: Any) -> None:
    install_tiny_weights("medsam2", image_size=64)
    ps = _sessions(MedSAM2Engine())
    s: Any = ps.view(plane)
    k, box = CASES[plane]
    marker = _marker_view(plane)[:, :, k]  # (u, v) of slice k
    img = s._u8[k]  # the model's (H, W) image of slice k, before resizing
    # in the view the image is (H = v, W = u) with both flipped: top = v max (superior),
    # left = u max (right for coronal, anterior for sagittal)
    assert img.shape == (marker.shape[1], marker.shape[0])
    _top_left(img, marker[::-1, ::-1].T)
    # a box around the marker reaches the model at the image's top-left
    coords = s._point_inputs(Prompts.make(box=box))["point_coords"][0, 0].numpy()
    h, w = img.shape
    assert (coords[:, 0] < 64 / 2).all() and (coords[:, 1] < 64 / 2).all(), coords
    assert coords[0].tolist() == pytest.approx([0.0, 0.0], abs=64 / min(h, w))

    # the model answers with its input's top-left quarter: that is the marker's corner
    def top_left_logits(vs: Any, z: int, reverse: bool = False, memory: bool = True
                        ) -> torch.Tensor:
        lo = torch.full((1, 1, 16, 16), -10.0)
        lo[..., :8, :8] = 10.0
        return lo

    monkeypatch.setattr(s, "_run_logits", top_left_logits)
    got = ps.view(plane).segment_slice(k, Prompts.make(box=box))
    ps.changed(plane, [1])
    canon = ps.mask(1)
    assert got.shape == marker.shape
    want = np.zeros(SHAPE, bool)  # the quarter of slice k on the marker's side
    sl: list[Any] = [slice(None)] * 3
    u, v, axis = plane.order
    sl[u] = slice(SHAPE[u] - SHAPE[u] // 2, None)
    sl[v] = slice(SHAPE[v] - SHAPE[v] // 2, None)
    sl[axis] = k
    want[tuple(sl)] = True
    assert np.array_equal(canon, want)
    assert canon[MARK].sum() == _marker_view(plane)[:, :, k].sum()  # every marker voxel of k


@pytest.mark.parametrize("plane", [Plane.CORONAL, Plane.SAGITTAL])
def test_medsam_sees_and_answers_in_the_radiological_view(plane: Plane,
                                                         monkeypatch: Any) -> None:
    install_tiny_medsam("medsam", image_size=64)
    ps = _sessions(MedSAMEngine())
    s: Any = ps.view(plane)
    k, box = CASES[plane]
    marker = _marker_view(plane)[:, :, k]
    img = np.asarray(s._slices[k])
    grey = img if img.ndim == 2 else img[..., 0]
    _top_left(grey.astype(np.float64), marker[::-1, ::-1].T)
    seen: list[Any] = []

    def top_left_mask(emb: Any, view: Prompts) -> np.ndarray:
        seen.append(view.box)
        out = np.zeros(grey.shape, bool)
        out[: grey.shape[0] // 2, : grey.shape[1] // 2] = True
        return out

    monkeypatch.setattr(s._pred, "predict", top_left_mask)
    ps.view(plane).segment_slice(k, Prompts.make(box=box))
    ps.changed(plane, [1])
    c0, r0, c1, r1 = seen[0]  # the box the model got: its input's top-left corner
    assert c0 == 0 and r0 == 0 and c1 < grey.shape[1] / 2 and r1 < grey.shape[0] / 2
    canon = ps.mask(1)
    u, v, axis = plane.order
    idx = np.argwhere(canon)
    assert (idx[:, axis] == k).all()
    assert idx[:, u].min() == SHAPE[u] - SHAPE[u] // 2 and idx[:, v].min() == SHAPE[v] - SHAPE[v] // 2
    assert canon[MARK].sum() == marker.sum()
