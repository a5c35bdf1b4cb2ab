"""The classic engine's wider growth window (``far_grow``; issue 17, off by default: it did not
raise the benchmarks' means, see benchmarks/devset.md, eleventh pass (d))."""

from __future__ import annotations

import numpy as np

from segloop.engines import drive
from segloop.engines.classic import ClassicEngine
from segloop.eval.protocol import box_from_mask, key_slice
from segloop.io.volume import Volume
from segloop.types import Prompts


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def _tilted_cylinder() -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """A bright tube (radius 8 mm) crossing 3 mm slices at a slant: 4.5 mm sideways per slice,
    more than the growth window (3 mm) lets a slice's mask move."""
    shape, sp = (64, 64, 12), (1.0, 1.0, 3.0)
    gx, gy = np.ogrid[:64, :64]
    truth = np.zeros(shape, dtype=bool)
    for z in range(2, 10):
        truth[:, :, z] = (gx - 20 - 4.5 * (z - 2)) ** 2 + (gy - 32) ** 2 <= 8.0**2
    rng = np.random.default_rng(0)
    img = 100.0 + rng.normal(0.0, 8.0, shape)
    img[truth] = 200.0 + rng.normal(0.0, 8.0, int(truth.sum()))
    return img, truth, sp


def _box_and_propagate(engine: ClassicEngine, img: np.ndarray, truth: np.ndarray,
                       sp: tuple[float, float, float]) -> np.ndarray:
    vol = Volume(data=img.astype(np.float32), affine=np.diag([*sp, 1.0]), source_format="npz",
                 modality="MR")
    session = engine.open(vol)
    z = key_slice(truth)
    session.segment_slice(z, Prompts(box=box_from_mask(truth[:, :, z])))
    drive(session.propagate(z))
    return session.mask()


def test_far_grow_follows_a_target_moving_faster_than_the_window() -> None:
    """The growth window alone loses the slanted tube's leading edge slice after slice; with
    ``far_grow`` the unmistakable tissue up to twice as far is followed."""
    img, truth, sp = _tilted_cylinder()
    old = _dice(_box_and_propagate(ClassicEngine(), img, truth, sp), truth)
    new = _dice(_box_and_propagate(ClassicEngine(far_grow=2.0), img, truth, sp), truth)
    assert old < 0.8
    assert new > 0.95
