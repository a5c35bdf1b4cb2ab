"""``resume_support``: a positive click whose addition restarts the tracking past the object's
end stops where the boundary-support rule (``support_min``, ``engines/classic/support.py``),
anchored on the clicked slice, says the target ended, as a propagation from a box does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segloop.engines.classic import ClassicEngine
from segloop.eval.protocol import next_click
from segloop.types import Prompts

from .example_ct import example_ct


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.mark.shared_data
@pytest.mark.parametrize("resume", [None, 1.0])
def test_a_click_does_not_resume_the_run_on_the_support_rule_ended(shared_data: Path,
                                                                   resume: float | None) -> None:
    """The example CT's left kidney (label 3) from one box ends at its last slice
    (``support_min``). Of three simulated clicks, the third, positive, re-adds what the second
    took on the slices up to that end; carried on past it, the resumed tracking used to run
    on through 8 slices of the tissue below the kidney (Dice 0.874 -> 0.788). With
    ``resume_support`` it stops where the kidney's edge goes, the third click does not lower
    Dice (the second, negative, still does: it trims the rim on 11 slices), and every
    slice a click yields is its final mask, once. ``jump_frac`` is off here: on this case its
    own guard (no resuming across slices a jump ended) also stops this run-on."""
    can, truth, z, box = example_ct(shared_data, "3")
    session = ClassicEngine(resume_support=resume, jump_frac=None).open(can)  # type: ignore[arg-type]
    session.segment_slice(z, box)
    list(session.propagate(z))
    last = int(np.flatnonzero(truth.any(axis=(0, 1))).max())
    dices = [_dice(session.mask(), truth)]
    for _ in range(3):
        click = next_click(session.mask(), truth, can.spacing)
        assert click is not None
        results = list(session.refine(click.z, Prompts.make(points=[(click.x, click.y)],
                                                            labels=[click.label])))
        mask = session.mask()
        for r in results:
            assert np.array_equal(r.mask, mask[:, :, r.z])
        assert [r.done for r in results] == list(range(1, len(results) + 1))
        assert len({r.z for r in results}) == len(results)
        dices.append(_dice(mask, truth))
    past = int(session.mask()[:, :, last + 2:].sum())
    if resume is None:
        assert dices[3] < dices[2] - 0.05  # the run-on this option is for
        assert past > 0.2 * truth.sum()
    else:
        assert dices[3] >= dices[2] - 0.002, dices
        assert past == 0
