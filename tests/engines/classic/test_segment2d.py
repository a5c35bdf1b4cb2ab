"""The classic engine on one slice (issue 17): corrections are local, a positive click never
takes back what a negative click of the same slice rejected."""

from __future__ import annotations

import numpy as np

from segloop.engines.classic.context import ClassicContext
from segloop.engines.classic.options import ClassicOptions
from segloop.engines.classic.segment2d import box_segment, prompted_slice
from segloop.types import Prompts


def test_a_positive_click_stops_halfway_to_a_negative_click() -> None:
    """A bar of the target's intensity (a target touching a same-intensity neighbour along
    its length): a negative click on the neighbour's half and a positive click on the
    target's half. The region grown from the positive click floods along the bar; it must
    keep to the voxels nearer the positive click than the negative one."""
    img = np.full((48, 48, 2), 100.0)
    img[14:27, 14:27, 0] = 180.0  # the target, boxed on slice 0
    img[14:27, 12:40, 1] = 180.0  # slice 1: the target and its neighbour, one bar
    img += np.random.default_rng(6).normal(0.0, 5.0, img.shape)
    ctx = ClassicContext(img.astype(np.float32), (1.0, 1.0, 3.0), ClassicOptions())
    box_segment(ctx, 1, 0, (14, 14, 26, 26))
    a, b = (20, 18), (20, 32)  # positive on the target, negative on the neighbour
    m = prompted_slice(ctx, 1, 1, Prompts.make(points=[b, a], labels=[0, 1]), base=None)
    assert m[a] and m[19:22, 16:21].all()  # the target's part is taken
    assert not m[:, 26:].any()  # nothing nearer the negative click (beyond y = 25)
