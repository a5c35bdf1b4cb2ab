"""A volume engine's large boxed picture is segmented at the object's scale (``picture_px``).

The classic engine reads a picture's pixels as mm and its sizes were tuned on targets some
20-200 voxels across; on a 500-pixel object with rib-like texture it follows the stripes. The
2D path shrinks such a picture so the box's longer side spans ``picture_px`` pixels and brings
the mask back (benchmarks/devset.md, "2D photos and X-rays": photos, X-rays, dermoscopy and
ultrasound all gain)."""

from __future__ import annotations

import numpy as np
import pytest

from segloop.engines import get_engine
from segloop.engines.image2d import picture_scale, segment_image
from segloop.engines.image2d_session import Image2DSession
from segloop.io.image2d import Image2D, ImageSource
from segloop.types import Prompts


def _striped_object() -> tuple[Image2D, np.ndarray, tuple[int, int, int, int]]:
    """An 800 x 600 picture: an ellipse of dark and mid-grey 18-pixel stripes (ribs over
    lung) on a background as bright as its light stripes, with noise."""
    rng = np.random.default_rng(0)
    h, w = 600, 800
    rr, cc = np.mgrid[:h, :w]
    truth = ((cc - 400) / 250) ** 2 + ((rr - 300) / 200) ** 2 <= 1
    img = np.full((h, w), 150.0)
    img[truth] = np.where((rr[truth] // 18) % 2 == 0, 60.0, 140.0)
    img += rng.normal(0, 8, img.shape)
    ys, xs = np.nonzero(truth)
    box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    return Image2D(pixels=np.clip(img, 0, 255).astype(np.uint8), source=ImageSource.PNG), truth, box


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_a_large_textured_object_is_taken_whole_at_the_objects_scale() -> None:
    image, truth, box = _striped_object()
    on = segment_image(get_engine("classic"), image, Prompts(box=box))
    assert on.shape == truth.shape
    assert _dice(on, truth) > 0.95
    # what the option is for, measured without ``ring_novel``: at full size that rule also
    # rescues this picture (the dark stripes appear nowhere around the box), so it would
    # hide what the scale does
    on = segment_image(get_engine("classic", ring_novel=None), image, Prompts(box=box))
    off = segment_image(get_engine("classic", picture_px=None, ring_novel=None), image,
                        Prompts(box=box))
    assert _dice(on, truth) > _dice(off, truth) + 0.05


def test_only_large_boxed_pictures_without_a_pixel_size_are_shrunk() -> None:
    image, _, box = _striped_object()
    engine = get_engine("classic")
    assert picture_scale(engine, image, Prompts(box=box)) == pytest.approx(128 / 501)
    assert picture_scale(engine, image, Prompts(box=(10, 10, 100, 60))) == 1.0  # small box
    assert picture_scale(engine, image, Prompts.make(points=[(400, 300)], labels=[1])) == 1.0
    assert picture_scale(get_engine("classic", picture_px=None), image, Prompts(box=box)) == 1.0
    with_mm = Image2D(pixels=image.pixels, source=ImageSource.PNG, spacing=(0.2, 0.2))
    assert picture_scale(engine, with_mm, Prompts(box=box)) == 1.0  # sizes are in mm already


def test_a_box_and_clicks_at_the_pictures_edge_stay_inside_the_shrunk_picture() -> None:
    image, _, _ = _striped_object()
    session = Image2DSession(get_engine("classic"), image)
    session.segment_slice(0, Prompts(box=(0, 0, image.width - 1, image.height - 1)))
    for _ in session.refine(0, Prompts.make(points=[(image.width - 1, image.height - 1)], labels=[0])):
        pass
    assert session.mask().shape == (image.width, image.height, 1)
