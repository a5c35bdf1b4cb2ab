"""The contract every segmentation engine passes (the semantics of segloop.engines.base).

``check_engine_contract(engine)`` runs one engine through the protocol on a synthetic
volume (a bright and a dark ellipsoid in noise, stored in LPS order with anisotropic spacing)
and raises AssertionError on any breach. ``quality=False`` skips the checks that need a
working model (IoU, the effect of clicks) for engines run with random test weights.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from segloop.engines.base import Engine, Session, drive
from segloop.errors import CancelledError, PromptError
from segloop.eval.protocol import box_from_mask, key_slice
from segloop.types import Prompts, SliceResult

from .synthetic import phantom

__all__ = ["check_engine_contract", "iou"]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool arrays (1.0 when both are empty)."""
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


def _collect(results: object, shape: tuple[int, int, int]) -> list[SliceResult]:
    out: list[SliceResult] = []
    drive(results, on_progress=out.append)  # type: ignore[arg-type]
    for i, r in enumerate(out):
        assert isinstance(r, SliceResult), f"yielded {type(r).__name__}, want SliceResult"
        assert 0 <= r.z < shape[2], f"slice {r.z} out of range"
        assert r.mask.shape == shape[:2] and r.mask.dtype == np.bool_, (r.mask.shape, r.mask.dtype)
        # done counts computed slices (+1 each); a result that supersedes an earlier one
        # (e.g. a slice changed by a 3D filter at the end) keeps the counter
        prev = out[i - 1].done if i else 0
        assert r.done in (prev, prev + 1) and r.done >= 1, f"done={r.done} after {prev}"
        assert r.total >= r.done and r.total == out[0].total, "total must be constant and >= done"
    if out:
        assert out[-1].done == out[-1].total, "the last result must have done == total"
    return out


def check_engine_contract(engine: Engine, *, quality: bool = True) -> None:
    """Assert that ``engine`` follows the Engine/Session contract (see module docstring)."""
    ph = phantom()
    assert isinstance(engine.name, str) and engine.name
    assert isinstance(engine.description, str) and engine.description
    assert engine.unavailable_reason() is None
    session = engine.open(ph.volume)
    assert isinstance(session, Session)
    shape = ph.bright.shape
    assert tuple(session.shape) == shape, f"session shape {session.shape}, want canonical {shape}"
    assert session.mask(7).shape == shape and not session.mask(7).any()

    # --- one object from a box: 2D mask, then propagation over every other slice
    z = key_slice(ph.bright)
    box = box_from_mask(ph.bright[:, :, z])
    m2 = session.segment_slice(z, Prompts(box=box), object_id=1)
    assert isinstance(m2, np.ndarray) and m2.shape == shape[:2] and m2.dtype == np.bool_
    assert np.array_equal(session.mask(1)[:, :, z], m2), "segment_slice must store the slice"
    others = session.mask(1).copy()
    others[:, :, z] = False
    assert not others.any(), "segment_slice must leave the other slices untouched"
    if quality:
        assert iou(m2, ph.bright[:, :, z]) > 0.8, f"2D IoU {iou(m2, ph.bright[:, :, z]):.3f}"
    res = _collect(session.propagate(z, object_id=1), shape)
    assert {r.z for r in res} - {z} == {k for k in range(shape[2]) if k != z}, "propagate covers all"
    m3 = session.mask(1)
    assert m3.shape == shape and m3.dtype == np.bool_
    last = {r.z: r.mask for r in res}  # a later result for a slice supersedes an earlier one
    for k, m in last.items():
        assert np.array_equal(m3[:, :, k], m), f"slice {k}: last yielded mask != stored mask"
    # a propagation may tidy the slice it starts from (MedSAM2's largest 3D component), never grow it
    assert not (m3[:, :, z] & ~m2).any(), "propagation must not add voxels to its start slice"
    if quality:
        assert iou(m3, ph.bright) > 0.75, f"3D IoU {iou(m3, ph.bright):.3f}"

    # --- corrections: a negative click inside the mask, a positive one in a missed voxel
    zc = z + 2
    before = session.mask(1)
    inside = np.argwhere(before[:, :, zc])
    if quality:
        assert inside.size, "the propagated mask should cover slice z+2"
        x, y = (int(v) for v in inside[len(inside) // 2])
        res = _collect(session.refine(zc, Prompts.make(points=[(x, y)], labels=[0]), 1), shape)
        assert res, "refine must yield at least the corrected slice"
        assert zc in {r.z for r in res}
        assert not session.mask(1)[x, y, zc], "a negative click must remove its voxel"
        missed = np.argwhere(ph.bright[:, :, zc] & ~session.mask(1)[:, :, zc])
        x, y = (int(v) for v in missed[len(missed) // 2])
        _collect(session.refine(zc, Prompts.make(points=[(x, y)], labels=[1]), 1), shape)
        assert session.mask(1)[x, y, zc], "a positive click must add its voxel"
        assert iou(session.mask(1), ph.bright) > 0.6, "corrections must not wreck the object"
    else:
        res = _collect(session.refine(zc, Prompts.make(points=[(int(box[0]) + 2, int(box[1]) + 2)],
                                                       labels=[1]), 1), shape)
        assert res and zc in {r.z for r in res}

    # --- a second object is independent of the first
    first = session.mask(1)
    zd = key_slice(ph.dark)
    session.segment_slice(zd, Prompts(box=box_from_mask(ph.dark[:, :, zd])), object_id=2)
    _collect(session.propagate(zd, object_id=2), shape)
    assert np.array_equal(session.mask(1), first), "object 2 must not change object 1"
    assert {1, 2} <= set(session.objects())
    if quality:
        assert iou(session.mask(2), ph.dark) > 0.75, f"dark object IoU {iou(session.mask(2), ph.dark):.3f}"

    # --- set_mask / mask round trip
    edit = ph.dark.copy()
    edit[:, :, 0] = False
    session.set_mask(edit, object_id=3)
    assert np.array_equal(session.mask(3), edit)
    assert 3 in session.objects()

    # --- propagate from a given 2D mask
    session.segment_slice(zd, Prompts(box=box_from_mask(ph.dark[:, :, zd])), object_id=4)
    res = _collect(session.propagate(zd, mask2d=ph.dark[:, :, zd], object_id=4), shape)
    assert np.array_equal(session.mask(4)[:, :, zd], ph.dark[:, :, zd])

    # --- cancellation leaves the session usable
    stop = threading.Event()
    calls: list[int] = []

    def on_progress(r: SliceResult) -> None:
        calls.append(r.z)
        stop.set()

    session.segment_slice(z, Prompts(box=box), object_id=5)
    with pytest.raises(CancelledError):
        drive(session.propagate(z, object_id=5), on_progress=on_progress, cancel=stop)
    assert len(calls) == 1, "cancel must stop after the slice in progress"
    assert session.mask(5).shape == shape
    res = _collect(session.propagate(z, object_id=5), shape)
    # every other slice again (a 3D filter may re-yield some at the end: the contract allows it)
    assert {r.z for r in res} - {z} == {k for k in range(shape[2]) if k != z}
    if quality:
        assert iou(session.mask(5), ph.bright) > 0.75

    # --- out-of-range prompts raise PromptError
    nx, ny, nz = shape
    bad = [
        lambda: session.segment_slice(nz, Prompts(box=box)),
        lambda: session.segment_slice(-1, Prompts(box=box)),
        lambda: session.segment_slice(z, Prompts(box=(0, 0, nx, 5))),
        lambda: session.segment_slice(z, Prompts(box=(5, 5, 3, 9))),
        lambda: session.segment_slice(z, Prompts.make(points=[(nx + 3, 1)], labels=[1])),
        lambda: drive(session.propagate(nz + 1)),
        lambda: drive(session.refine(z, Prompts.make(points=[(1, ny)], labels=[0]))),
        lambda: drive(session.refine(nz, Prompts.make(points=[(1, 1)], labels=[0]))),
    ]
    for i, call in enumerate(bad):
        with pytest.raises(PromptError):
            call()
            raise AssertionError(f"bad prompt #{i} was accepted")
