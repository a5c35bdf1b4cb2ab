"""The classic engine on one slice (issue 17): corrections are local, a positive click never
takes back what a negative click of the same slice rejected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

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


def test_a_box_keeps_the_one_intensity_class_that_spans_it() -> None:
    """An oblique band (the target, boxed tightly: it touches all four sides of the box) with
    a brighter blob beside it inside the box and absent from the ring around it (the putamen
    beside the pallidum). Both look like "inside the box, not like the ring", so a
    likelihood ratio against the ring takes both; only the band spans the box, so the box's
    result is the band, and the model learned is the band's."""
    xx, yy = np.mgrid[0:64, 0:64]
    band = (np.abs((xx - 20) - 0.8 * (yy - 18)) <= 4) & (xx >= 16) & (xx <= 44) & (yy >= 16) & (yy <= 48)
    blob = ((xx - 36) ** 2 + (yy - 22) ** 2 <= 49) & ~band
    img = np.full((64, 64, 1), 100.0)
    img[band, 0] = 160.0
    img[blob, 0] = 200.0
    img += np.random.default_rng(3).normal(0.0, 4.0, img.shape)
    ctx = ClassicContext(img.astype(np.float32), (1.0, 1.0, 1.0), ClassicOptions())
    m = box_segment(ctx, 1, 0, (16, 16, 44, 48))
    dice = 2.0 * (m & band).sum() / (m.sum() + band.sum())
    assert (m & blob).sum() <= 0.05 * blob.sum()  # the neighbour is left out
    assert dice >= 0.8
    assert ctx.models[1].log_ratio(np.array([200.0]))[0] < 0  # ... and is background now


def test_a_noisy_one_toned_target_is_not_split_into_two_classes(tmp_path: Path) -> None:
    """The class rule needs two real classes: one noisy tone split at Otsu's threshold has
    its halves' medians apart (by about 1.1 times the halves' spreads), but it is one class.
    Bright discs on a plain background, saved as JPEG photos and boxed tightly, keep the
    whole disc (with the rule firing on one tone, the mean IoU was 0.82)."""
    from PIL import Image

    from segloop.engines import get_engine
    from segloop.engines.image2d import segment_image
    from segloop.io.image2d import load_image2d

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64]
    scores = []
    for i in range(8):
        cx, cy = rng.uniform(16, 48, 2)
        r = rng.uniform(6.4, 14.0)
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        rgb = rng.normal(60, 20, (64, 64, 3)) + disc[..., None] * np.array([120, 90, 60])
        path = tmp_path / f"disc{i}.jpg"
        Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(path)
        ys, xs = np.nonzero(disc)
        m = segment_image(get_engine("classic"), load_image2d(path),
                          Prompts.make(box=[int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]))
        scores.append(float((m & disc).sum() / (m | disc).sum()))
    assert np.mean(scores) >= 0.9, [round(s, 3) for s in scores]


def test_a_box_over_a_two_toned_target_that_spans_it_whole_keeps_both_tones() -> None:
    """The rule's other side: a target whose two tones both reach across the box (two
    halves, side by side) is no target plus neighbour; both tones stay."""
    img = np.full((64, 64, 1), 100.0)
    img[16:45, 16:32, 0] = 160.0
    img[16:45, 32:49, 0] = 200.0
    img += np.random.default_rng(4).normal(0.0, 4.0, img.shape)
    ctx = ClassicContext(img.astype(np.float32), (1.0, 1.0, 1.0), ClassicOptions())
    m = box_segment(ctx, 1, 0, (16, 16, 44, 48))
    assert m[18:43, 18:47].all()


def test_a_later_positive_click_does_not_undo_an_earlier_negative_one() -> None:
    """A propagated slice holds a wrong bar of the target's intensity. A negative click at
    its middle rejects the bar; a positive click given next, near one end, marks a part of
    it as target. The slice is recomputed from both clicks: the negative click acts as it
    did when it was given (the bar goes), and the positive one adds only its own side, so
    the bar's other end does not come back."""
    img = np.full((64, 64, 2), 100.0)
    img[20:33, 20:33, 0] = 180.0  # the target, boxed on slice 0
    img[20:33, 4:60, 1] = 180.0  # slice 1: a bar of the same intensity
    img += np.random.default_rng(7).normal(0.0, 5.0, img.shape)
    ctx = ClassicContext(img.astype(np.float32), (1.0, 1.0, 3.0), ClassicOptions())
    box_segment(ctx, 1, 0, (20, 20, 32, 32))
    base = np.zeros((64, 64), dtype=bool)
    base[20:33, 4:60] = True  # the propagated (wrong) mask of slice 1
    neg, pos = (26, 32), (26, 12)
    alone = prompted_slice(ctx, 1, 1, Prompts.make(points=[neg], labels=[0]), base=base)
    assert not alone.any()  # the negative click alone rejects the bar
    m = prompted_slice(ctx, 1, 1, Prompts.make(points=[neg, pos], labels=[0, 1]), base=base)
    assert m[pos] and m[22:31, 8:16].all()  # the positive click's side is taken
    assert not m[:, 33:].any()  # nothing beyond the negative click comes back


@pytest.mark.shared_data
def test_a_box_result_reaches_the_sides_of_its_tight_box(shared_data: Path) -> None:
    """The left lower lung lobe of the TotalSegmentator example CT (3 mm voxels) on the
    slice where it is largest: a crescent whose thin arm runs up along the ribs to the top
    of the box. The opening of the box segmentation cut that arm off (the result stopped
    26 voxels short of the box's top; Dice 0.763 before this rule). A tight box's target
    touches all four sides, so the target-like tissue connected to the result that reaches
    the missed side is taken back."""
    from segloop.engines.classic import ClassicEngine
    from segloop.eval.protocol import box_from_mask, key_slice
    from segloop.io import load_label, load_volume

    vol = load_volume(shared_data / "totalseg" / "example_ct_sm.nii.gz")
    truth = load_label(shared_data / "totalseg" / "example_seg.nii.gz", vol, "11")
    truth = np.asarray(truth, dtype=bool)
    z = key_slice(truth)
    box = box_from_mask(truth[:, :, z])
    m = ClassicEngine().open(vol).segment_slice(z, Prompts(box=box))
    t = truth[:, :, z]
    dice = 2 * (m & t).sum() / (m.sum() + t.sum())
    assert dice >= 0.85, f"key-slice Dice {dice:.3f}"
    assert m[:, box[3] - 2:box[3] + 1].any()  # it reaches the box's far side in y
    off = ClassicEngine(reach_gap=None).open(vol).segment_slice(z, Prompts(box=box))
    assert not off[:, box[3] - 2:box[3] + 1].any()  # the rule switched off: it does not
