"""``resume_cap``: a positive click on a slice the object had left restarts the tracking past
the object's end (``propagation.propagate_delta``); there the target tapers, and the resumed
tracking is not to outgrow the object (``propagation.resume_area``): once larger, it keeps
to the previous slice's footprint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segloop.engines.classic import ClassicEngine
from segloop.engines.classic.propagation import resume_area
from segloop.types import Prompts

from .heldout import boxed_then_click, heldout_case


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_resume_area_is_the_larger_of_the_slice_and_its_nearest_held_slice() -> None:
    mask = np.zeros((8, 8, 6), dtype=bool)
    mask[:3, :3, 1] = True  # 9 voxels, two slices from z 3
    mask[:2, :2, 4] = True  # 4 voxels, the nearest to z 3
    mask[:1, :2, 3] = True  # slice 3 itself: 2 voxels
    assert resume_area(mask, 3) == 4
    mask[:5, :5, 3] = True
    assert resume_area(mask, 3) == 25
    assert resume_area(np.zeros((4, 4, 3), dtype=bool), 1) == 0


@pytest.mark.shared_data
@pytest.mark.parametrize("cap", [None, 1.0])
def test_a_click_past_the_end_does_not_grow_the_vena_cava_into_the_liver(
        shared_data: Path, cap: float | None) -> None:
    """Held-out ``ho_ct_ivc`` (the example CT's inferior vena cava, 3 mm): the box's
    propagation ends at z 19, the first simulated click is positive on the empty z 25
    (34 voxels, the target 31). Its outward resumed tracking grew 38, 55, 61, 69 voxels on
    z 26-29 into the liver while the vena cava tapers (29, 23, 18, 15): Dice 0.705 -> 0.782.
    With ``resume_cap`` no resumed slice outgrows the object (55 voxels on z 19), and Dice
    after the click is 0.789; every slice the click yields is its final mask, once."""
    vol, truth = heldout_case(shared_data, "ho_ct_ivc")
    can = vol.canonical()
    session = ClassicEngine(resume_cap=cap).open(can)  # type: ignore[arg-type]
    click = boxed_then_click(session, truth, can.spacing)
    d0 = _dice(session.mask(), truth)
    assert click.label == 1
    assert not session.mask()[:, :, click.z].any()
    limit = resume_area(session.mask(), click.z)
    results = list(session.refine(click.z, Prompts.make(points=[(click.x, click.y)],
                                                        labels=[1])))
    mask = session.mask()
    for r in results:
        assert np.array_equal(r.mask, mask[:, :, r.z])
    assert [r.done for r in results] == list(range(1, len(results) + 1))
    assert len({r.z for r in results}) == len(results)
    past = mask[:, :, click.z + 1:].sum(axis=(0, 1))
    d1 = _dice(mask, truth)
    assert d1 > d0
    if cap is None:
        assert past.max() > limit  # the growth this option is for
        assert d1 < 0.785
    else:
        assert past.max() <= limit, (past, limit)
        assert d1 > 0.785
