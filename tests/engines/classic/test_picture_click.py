"""Corrective clicks on a 2D picture re-run the box's cut around the click (``picture_click``).

On the 2D set a positive click in a large missed region (a lung's base, a polyp's paler half)
took a disk of it, and a negative click in a spurious rim carved a round hole into the target
too (benchmarks/devset.md, twelfth pass (c2d)). With ``picture_click`` a positive click adds
the part of the box around it that a minimum cut gives to the mask's tissue plus the click's,
a negative click removes the part of the mask that the cut gives to the ring's tissue plus the
click's; volumes are untouched.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from segloop.engines import get_engine
from segloop.engines.classic.context import ClassicContext
from segloop.engines.classic.options import ClassicOptions
from segloop.engines.classic.picture_click import picture_add, picture_remove
from segloop.engines.classic.segment2d import carve, grow
from segloop.engines.image2d import _feature_prompts
from segloop.eval.protocol import box_from_mask, next_click
from segloop.io.volume import Volume
from segloop.types import Prompts


def _scene(spurious: bool) -> tuple[ClassicContext, np.ndarray, np.ndarray, np.ndarray]:
    """A 200 x 160 (X, Y) picture: a dark body (60) with a bright band (170) along its right
    side, both the target, on a background of 130. Returns the picture's context (the
    body's model learned), the truth, the body and the band."""
    rng = np.random.default_rng(3)
    xx, yy = np.mgrid[:200, :160]
    body = ((xx - 90) / 60.0) ** 2 + ((yy - 80) / 60.0) ** 2 <= 1
    band = (((xx - 90) / 85.0) ** 2 + ((yy - 80) / 60.0) ** 2 <= 1) & (xx > 90) & ~body
    img = np.where(body, 60.0, np.where(band, 170.0, 130.0)) + rng.normal(0, 6, body.shape)
    truth = body | band
    if spurious:  # the band is no target, the mask holds it: a spurious region
        truth = body
    ctx = ClassicContext(img.astype(np.float32)[:, :, None], (1.0, 1.0, 1.0), ClassicOptions())
    ctx.picture = True
    ctx.learn_from_mask(1, 0, body)
    return ctx, truth, body, band


def test_a_positive_click_takes_the_missed_band_not_a_disk_of_it() -> None:
    ctx, truth, body, band = _scene(spurious=False)
    click = next_click(body[:, :, None], truth[:, :, None], (1.0, 1.0, 1.0))
    assert click is not None and click.label == 1 and band[click.x, click.y]
    box = box_from_mask(truth)
    add = picture_add(ctx, 1, 0, click.x, click.y, body, box)
    assert add is not None
    assert (add & band).sum() >= 0.8 * band.sum()  # most of the band
    assert (add & ~truth).sum() <= 0.05 * band.sum()  # little of the background
    assert not (add & body).any()  # it only adds
    # the volume step grows a disk about as wide as the click is deep in the band
    old = grow(ctx, 1, 0, click.x, click.y, body)
    assert (old & band).sum() < 0.5 * (add & band).sum()


def test_a_negative_click_removes_the_spurious_band_around_it_and_keeps_the_target() -> None:
    ctx, truth, body, band = _scene(spurious=True)
    mask = body | band
    click = next_click(mask[:, :, None], truth[:, :, None], (1.0, 1.0, 1.0))
    assert click is not None and click.label == 0 and band[click.x, click.y]
    box = box_from_mask(mask)
    cut = picture_remove(ctx, 1, 0, click.x, click.y, mask, box, [])
    assert cut is not None
    # the band within twice the click's depth of it (REMOVE_REACH), none of the target
    assert (cut & band).sum() >= 0.4 * band.sum()
    assert (cut & body).sum() <= 0.002 * body.sum()
    # the volume step (a random walk and the leak of the click's tissue) takes the whole
    # band and a bite of the target beside the click
    old = carve(ctx, 1, 0, click.x, click.y, mask, [])
    assert (old & body).sum() > 10 * max(1, int((cut & body).sum()))


def test_off_without_a_box_outside_the_box_or_on_the_mask_it_leaves_the_click_to_the_volume_steps() -> None:
    ctx, truth, body, _band = _scene(spurious=False)
    box = box_from_mask(truth)
    off = ClassicContext(ctx.img, (1.0, 1.0, 1.0), replace(ctx.opts, picture_click=None))
    off.picture = True
    off.learn_from_mask(1, 0, body)
    assert picture_add(off, 1, 0, 160, 80, body, box) is None
    assert picture_add(ctx, 1, 0, 90, 80, body, box) is None  # on the mask
    assert picture_add(ctx, 1, 0, 10, 5, body, box) is None  # outside the box
    assert picture_add(ctx, 1, 0, 160, 80, np.zeros_like(body), box) is None  # no mask yet
    assert picture_remove(ctx, 1, 0, 160, 80, body, box, []) is None  # off the mask


def test_a_volume_is_untouched_by_the_option() -> None:
    # the same one-slice data as a volume (not a picture): identical masks with the option
    # on and off, box and clicks
    ctx, truth, _body, _band = _scene(spurious=False)
    vol = Volume(data=np.repeat(ctx.img, 3, axis=2), affine=np.eye(4), source_format="npz")
    masks = []
    for opts in ({}, {"picture_click": None}):
        session = get_engine("classic", **opts).open(vol)
        session.segment_slice(1, Prompts(box=box_from_mask(truth)))
        for pts, labs in (([(160, 80)], [1]), ([(100, 20)], [0])):
            for _ in session.refine(1, Prompts.make(points=pts, labels=labs)):
                pass
        masks.append(session.mask())
    assert np.array_equal(masks[0], masks[1])


def test_the_colour_feature_is_fitted_to_the_box_alone_when_the_engine_handles_clicks() -> None:
    prompts = Prompts.make(box=(10, 10, 50, 40), points=[(20, 20)], labels=[0])
    fitted = _feature_prompts(get_engine("classic"), prompts)
    assert fitted.box == (10, 10, 50, 40) and fitted.points.size == 0
    assert _feature_prompts(get_engine("classic", picture_click=None), prompts) is prompts
    points_only = Prompts.make(points=[(20, 20)], labels=[1])
    assert _feature_prompts(get_engine("classic"), points_only) is points_only
