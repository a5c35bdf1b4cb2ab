"""The classic engine's key slice takes the box's tissue that its surroundings do not show
(``ring_novel``, ``engines/classic/novel.py``; issue 17): a brain tumour's fainter oedema
around its bright core is the target's, not the background's."""

from __future__ import annotations

import numpy as np

from segloop.engines import drive
from segloop.engines.classic import ClassicEngine
from segloop.engines.classic.context import ClassicContext
from segloop.engines.classic.options import ClassicOptions
from segloop.engines.classic.segment2d import box_segment
from segloop.eval.protocol import box_from_mask, key_slice
from segloop.io.volume import Volume
from segloop.types import Prompts

Slice = tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int, int, int]]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def _core_and_oedema(seed: int, surround: float = 0.3, bright: bool = False) -> Slice:
    """A bright core (2.9) shaped as a cross that spans its box, fainter tissue (1.7) filling
    two of the box's corners, in a background of ``surround`` (noise 0.35). The core alone
    spans the box on 71 % of the area, as a tumour's enhancing part does inside its oedema.
    ``bright``: a brighter neighbour (5.0) fills a third corner."""
    core = np.zeros((100, 100), dtype=bool)
    core[20:80, 40:60] = True
    core[40:60, 20:80] = True
    whole = core.copy()
    whole[20:40, 20:40] = True
    whole[60:80, 60:80] = True
    img = np.full((100, 100, 1), surround)
    img[whole, 0] = 1.7
    img[core, 0] = 2.9
    if bright:
        img[60:80, 20:40, 0] = 5.0
    img += np.random.default_rng(seed).normal(0.0, 0.35, img.shape)
    xs, ys = np.nonzero(whole)
    return img.astype(np.float32), whole, core, (int(xs.min()), int(ys.min()), int(xs.max()),
                                                 int(ys.max()))


def _box(img: np.ndarray, box: tuple[int, int, int, int], **opts: float | None) -> np.ndarray:
    ctx = ClassicContext(img, (1.0, 1.0, 1.0), ClassicOptions(**opts))  # type: ignore[arg-type]
    return box_segment(ctx, 1, 0, box)


def test_the_fainter_part_the_ring_does_not_show_is_taken() -> None:
    """Without the rule the core alone is kept (it spans the box, so ``spanning_class`` reads
    the fainter corners as a neighbour): Dice of the whole 0.82 on every seed. The fainter
    tissue appears nowhere in the ring around the box, so it is target: Dice 0.99."""
    for seed in range(3):
        img, whole, core, box = _core_and_oedema(seed)
        old = _box(img, box, ring_novel=None)
        new = _box(img, box, ring_novel=0.02)
        assert _dice(old, whole) < 0.85 and _dice(old, core) > 0.95
        assert _dice(new, whole) >= 0.97


def test_the_model_calls_the_fainter_tissue_target_after_the_rule() -> None:
    """Propagation tracks with the key slice's model, so it is refitted on the whole result."""
    img, _, _, box = _core_and_oedema(0)
    ctx = ClassicContext(img, (1.0, 1.0, 1.0), ClassicOptions(ring_novel=0.02))
    box_segment(ctx, 1, 0, box)
    lr = ctx.models[1].log_ratio(np.array([0.3, 1.7, 2.9], dtype=np.float32))
    assert lr[0] < 0 < lr[1] and lr[2] > 0


def test_tissue_the_ring_shows_is_not_taken() -> None:
    """When the fainter tissue also surrounds the box it is the box's surroundings, not the
    target's: the rule adds nothing and the result is the plain one."""
    img, _, _, box = _core_and_oedema(0, surround=1.7)
    assert np.array_equal(_box(img, box, ring_novel=0.02), _box(img, box, ring_novel=None))


def test_tissue_brighter_than_the_target_is_never_added() -> None:
    """Only tissue between the surroundings and the result's own intensities is added: the
    brighter neighbour in the third corner gains no voxel from the rule."""
    img, whole, _, box = _core_and_oedema(0, bright=True)
    corner = np.zeros(whole.shape, dtype=bool)
    corner[60:80, 20:40] = True
    old = _box(img, box, ring_novel=None)
    new = _box(img, box, ring_novel=0.02)
    assert (new & corner).sum() <= (old & corner).sum()
    assert _dice(new, whole) > _dice(old, whole) + 0.1


def _volume(depth: int = 9) -> tuple[Volume, np.ndarray]:
    """The slice of ``_core_and_oedema`` stacked on ``depth`` 2 mm slices, shrinking by a
    voxel per slice away from the middle, with background slices at both ends."""
    img = np.full((100, 100, depth + 4), 0.3, dtype=np.float32)
    truth = np.zeros(img.shape, dtype=bool)
    mid = 2 + depth // 2
    for z in range(2, 2 + depth):
        s, w, _, _ = _core_and_oedema(z)
        k = abs(z - mid)
        w = w & np.roll(np.roll(w, k, 0), k, 1)  # shrink towards one corner
        img[:, :, z] = np.where(w, s[:, :, 0], 0.3)
        truth[:, :, z] = w
    img += np.random.default_rng(99).normal(0.0, 0.35, img.shape).astype(np.float32) * (~truth)
    vol = Volume(data=img, affine=np.diag([1.0, 1.0, 2.0, 1.0]), source_format="npz",
                 modality="MR")
    return vol, truth


def test_the_whole_tumour_is_followed_through_the_volume() -> None:
    """From one box on the key slice, propagation follows core and oedema together."""
    vol, truth = _volume()
    z = key_slice(truth)
    dices = []
    for opt in (None, 0.02):
        session = ClassicEngine(ring_novel=opt).open(vol)
        session.segment_slice(z, Prompts(box=box_from_mask(truth[:, :, z])))
        drive(session.propagate(z))
        dices.append(_dice(session.mask(), truth))
    assert dices[0] < 0.87
    assert dices[1] >= 0.95
