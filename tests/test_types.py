"""Prompts validation and construction."""

from __future__ import annotations

import numpy as np
import pytest

from segloop.errors import PromptError
from segloop.types import Prompts, validate_prompts

SHAPE = (20, 30, 10)


def test_make_from_lists() -> None:
    p = Prompts.make(box=[1, 2, 5, 6], points=[(3, 4)], labels=[1])
    assert p.box == (1, 2, 5, 6)
    assert p.points.shape == (1, 2) and p.labels.tolist() == [1]
    validate_prompts(3, p, SHAPE)


@pytest.mark.parametrize(
    ("z", "box", "match"),
    [
        (10, (1, 1, 5, 5), "slice index 10 is out of range"),
        (-1, (1, 1, 5, 5), "out of range"),
        (0, (5, 1, 1, 5), "zero size"),
        (0, (1, 1, 20, 5), "outside the slice"),
        (0, (-1, 1, 3, 5), "outside the slice"),
        (0, (2, 1, 2, 5), "one voxel wide"),
    ],
)
def test_bad_box_or_slice(z: int, box: tuple[int, int, int, int], match: str) -> None:
    with pytest.raises(PromptError, match=match):
        validate_prompts(z, Prompts.make(box=box), SHAPE)


def test_bad_points() -> None:
    with pytest.raises(PromptError, match="one label per point"):
        Prompts.make(points=[(1, 2), (3, 4)], labels=[1])
    with pytest.raises(PromptError, match=r"1 .positive. or 0"):
        Prompts.make(points=[(1, 2)], labels=[2])
    with pytest.raises(PromptError, match="give a box or at least one point"):
        Prompts.make()
    with pytest.raises(PromptError, match="outside the slice"):
        validate_prompts(0, Prompts.make(points=[(25, 2)], labels=[1]), SHAPE)


def test_merged_appends_points_and_replaces_box() -> None:
    a = Prompts.make(box=(1, 1, 4, 4), points=[(2, 2)], labels=[1])
    b = Prompts.make(points=[(3, 3)], labels=[0])
    m = a.merged(b)
    assert m.box == (1, 1, 4, 4)
    assert m.points.tolist() == [[2, 2], [3, 3]] and m.labels.tolist() == [1, 0]
    assert a.merged(Prompts.make(box=(0, 0, 9, 9))).box == (0, 0, 9, 9)
    assert np.issubdtype(m.points.dtype, np.integer)
