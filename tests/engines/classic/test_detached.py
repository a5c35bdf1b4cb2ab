"""``drop_detached``: after a negative click, the pieces of the object that no chain of
slice-to-slice links joins to a slice the user vouched for (box, positive point, set mask)
go (``engines/classic/detached.py``)."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from segloop.engines.classic import ClassicEngine
from segloop.engines.classic.detached import detached, evidence_slices
from segloop.engines.state import ObjectState
from segloop.types import Prompts

from .heldout import boxed_then_click, heldout_case


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_pieces_joined_by_overlap_or_reach_stay_the_rest_go() -> None:
    m = np.zeros((40, 40, 10), dtype=bool)
    m[10:20, 10:20, 2:5] = True  # the target on slices 2-4, evidence on 2
    m[21:25, 10:20, 5] = True  # slice 5: no overlap with slice 4, 2 voxels (2 mm) away
    m[30:34, 30:34, 5] = True  # slice 5: a second piece, far from everything
    m[10:20, 10:20, 7:9] = True  # slices 7-8 beyond the empty slice 6
    sp = (1.0, 1.0)
    got = detached(m, {2}, sp, reach_mm=3.0)
    assert not got[:, :, 2:5].any()
    assert not got[21:25, 10:20, 5].any()  # within reach of slice 4's mask
    assert got[30:34, 30:34, 5].all() and got[:, :, 5].sum() == 16
    assert got[:, :, 7:9].sum() == m[:, :, 7:9].sum()  # nothing links across slice 6
    # a shorter reach does not join the shifted piece
    assert detached(m, {2}, sp, reach_mm=1.5)[21:25, 10:20, 5].all()
    # evidence on slice 8 keeps its own chain; no evidence at all drops everything
    assert not detached(m, {2, 8}, sp, 3.0)[:, :, 7:9].any()
    assert detached(m, set(), sp, 3.0).sum() == m.sum()


def test_evidence_is_a_box_a_positive_point_or_a_set_mask() -> None:
    st = ObjectState(mask=np.zeros((8, 8, 6), dtype=bool))
    st.anchors = {0, 1, 2, 3}
    st.prompts = {0: Prompts(box=(1, 1, 4, 4)),
                  1: Prompts.make(points=[(2, 2)], labels=[1]),
                  2: Prompts.make(points=[(2, 2)], labels=[0])}  # 3: a set mask, no prompts
    assert evidence_slices(st) == {0, 1, 3}


@pytest.mark.shared_data
@pytest.mark.parametrize("drop", [None, 1.0])
def test_a_negative_click_on_a_run_on_takes_its_detached_rest(shared_data: Path,
                                                             drop: float | None) -> None:
    """Held-out ``ho_mr_gallbladder`` (the example MR's gallbladder) from one box runs on
    below its end (z 14-19). The first simulated click, negative at the run-on's middle (z
    15), empties z 14 and halves z 15-19, leaving ~130 false voxels that no longer touch the
    gallbladder. With ``drop_detached`` they go (each changed slice yielded again, the counter
    kept)."""
    vol, truth = heldout_case(shared_data, "ho_mr_gallbladder")
    can = vol.canonical()
    session = ClassicEngine(drop_detached=drop).open(can)  # type: ignore[arg-type]
    click = boxed_then_click(session, truth, can.spacing)
    before = _dice(session.mask(), truth)
    assert click.label == 0
    results = list(session.refine(click.z, Prompts.make(points=[(click.x, click.y)], labels=[0])))
    mask = session.mask()
    last = {r.z: r.mask for r in results}
    for s, m2 in last.items():
        assert np.array_equal(m2, mask[:, :, s])
    done = [r.done for r in results]
    assert done[-1] == results[-1].total and all(b in (a, a + 1) for a, b in pairwise(done))
    end = int(np.flatnonzero(truth.any(axis=(0, 1))).max())
    below = int(mask[:, :, end + 2:].sum())
    if drop is None:
        assert below > 100  # the run-on's detached rest this option is for
    else:
        assert below == 0
        assert _dice(mask, truth) > before + 0.1
