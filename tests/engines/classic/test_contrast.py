"""The classic engine's key slice puts a high-contrast target's boundary half-way between
its intensity and its surroundings' (``edge_mid``, ``engines/classic/contrast.py``; issue
17): two dark cavities (CSF of the lateral ventricles) in bright tissue, blurred as a scan
blurs them, lose the partial-volume band and the septum between them."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from segloop.engines.classic.context import ClassicContext
from segloop.engines.classic.contrast import halfway_edge
from segloop.engines.classic.options import ClassicOptions
from segloop.engines.classic.segment2d import box_segment


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def _horns(seed: int, inner: float = 90.0) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """Two ellipses of ``inner`` 4 voxels apart in tissue of 370, blurred (sigma 1.5) and
    noisy (sigma 12); the truth is the ellipses, the box their bounding box."""
    x, y = np.mgrid[:100, :100]
    truth = ((((x - 50) / 22) ** 2 + ((y - 41) / 7) ** 2 <= 1)
             | (((x - 50) / 22) ** 2 + ((y - 59) / 7) ** 2 <= 1))
    img = ndi.gaussian_filter(np.where(truth, inner, 370.0), 1.5)
    img += np.random.default_rng(seed).normal(0.0, 12.0, img.shape)
    xs, ys = np.nonzero(truth)
    box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    return img[:, :, None].astype(np.float32), truth, box


def _box(img: np.ndarray, box: tuple[int, int, int, int], **opts: float | None) -> np.ndarray:
    ctx = ClassicContext(img, (1.0, 1.0, 1.0), ClassicOptions(**opts))  # type: ignore[arg-type]
    return box_segment(ctx, 1, 0, box)


def test_a_high_contrast_target_ends_half_way() -> None:
    """Without the rule the result takes the blurred band (some 1120 voxels for 958): Dice
    0.92; with it 0.99."""
    for seed in range(3):
        img, truth, box = _horns(seed)
        old = _box(img, box, edge_mid=None)
        new = _box(img, box, edge_mid=0.02)
        assert _dice(old, truth) < 0.93
        assert _dice(new, truth) > 0.97
        assert new.sum() < old.sum()


def test_a_target_like_its_surroundings_is_left_alone() -> None:
    """A target whose median lies within the ring's range (grey matter in grey and white
    matter) is not trimmed, nor one the cut would halve (a second tissue, not a band)."""
    rng = np.random.default_rng(0)
    img = rng.normal(360.0, 40.0, (60, 60)).astype(np.float32)
    fg = np.zeros((60, 60), dtype=bool)
    fg[20:40, 20:40] = True
    inbox = np.zeros_like(fg)
    inbox[15:45, 15:45] = True
    ring = ~inbox
    ctx = ClassicContext(img[:, :, None], (1.0, 1.0, 1.0), ClassicOptions(edge_mid=0.02))
    model = ctx.new_model(img[fg], img[ring])
    out, _ = halfway_edge(ctx, img, fg, model, inbox, ring, 0.02, 0.8)
    assert np.array_equal(out, fg)
    two = img.copy()
    two[20:40, 20:30] = 90.0  # a dark half and a half the cut would drop
    two[20:40, 30:40] = 300.0
    out, _ = halfway_edge(ctx, two, fg, model, inbox, ring, 0.02, 0.8)
    assert np.array_equal(out, fg)
    out, _ = halfway_edge(ctx, two, fg, model, inbox, ring, 0.02, 0.4)
    assert out.sum() < fg.sum()


def test_off_by_default() -> None:
    assert ClassicOptions().edge_mid is None


def test_a_2d_picture_s_session_skips_the_rule() -> None:
    """On the 2D photo set the cut lowered dermoscopy (a lesion's outline takes its faint
    edge): a picture's session runs without it; a volume's keeps it."""
    from segloop.engines.classic.session import ClassicSession
    from segloop.engines.image2d import image_as_volume
    from segloop.io.volume import Volume

    on = ClassicOptions(edge_mid=0.02)
    pic = image_as_volume(np.zeros((40, 50), np.float32), (1.0, 1.0), None)
    assert ClassicSession(pic, on).options.edge_mid is None
    vol = Volume(data=np.zeros((40, 50, 3), np.float32), affine=np.eye(4), source_format="nifti")
    assert ClassicSession(vol, on).options.edge_mid == 0.02
