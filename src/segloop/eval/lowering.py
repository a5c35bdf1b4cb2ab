"""The simulated clicks after which a case's Dice fell (issue 17 asks every evaluation to
report them): an engine's corrective click should never make the mask worse.

:func:`falls` finds the steps of one Dice sequence that fell by more than a tolerance;
:func:`lowering_clicks` applies it to an evaluation's records, per engine and case. Step k is
the mask after the k-th corrective click (SAM-Med3D's protocol: after its initial click and k
more), so step 0 (the box, or that initial click) is never one.
Imports segloop.eval.runner's records only; no metrics, no plotting.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.ism, segloop.train (the layer contract, pyproject.toml).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from segloop.eval.runner import StepRecord

__all__ = ["LOWER_TOL", "LoweringClick", "falls", "lowering_clicks"]

#: a fall of Dice this small (rounding, one voxel) is not counted
LOWER_TOL = 0.002


@dataclass(frozen=True)
class LoweringClick:
    """A click after which the case's Dice fell: ``step`` (1 = the first corrective click),
    its label (1 positive, 0 negative) and slice, and Dice before and after it."""

    engine: str
    case_id: str
    step: int
    label: int
    z: int
    before: float
    after: float

    @property
    def change(self) -> float:
        return self.after - self.before

    @property
    def sign(self) -> str:
        return "+" if self.label == 1 else "-"


def falls(dices: Sequence[float], tol: float = LOWER_TOL) -> list[int]:
    """The steps ``i >= 1`` where ``dices[i]`` is below ``dices[i - 1]`` by more than ``tol``."""
    return [i for i in range(1, len(dices)) if dices[i] < dices[i - 1] - tol]


def lowering_clicks(records: Iterable[StepRecord], tol: float = LOWER_TOL) -> list[LoweringClick]:
    """The clicks that lowered Dice by more than ``tol``, per engine and case in the records'
    order. Steps the protocol did not place (it stopped at a perfect mask) are left out."""
    runs: dict[tuple[str, str], list[StepRecord]] = {}
    for r in records:
        if r.placed or r.click == 0:
            runs.setdefault((r.engine, r.case_id), []).append(r)
    out: list[LoweringClick] = []
    for (engine, case_id), recs in runs.items():
        recs = sorted(recs, key=lambda r: r.click)
        for i in falls([r.dice for r in recs], tol):
            r = recs[i]
            out.append(LoweringClick(engine, case_id, r.click, r.click_label, r.click_z,
                                     recs[i - 1].dice, r.dice))
    return out
