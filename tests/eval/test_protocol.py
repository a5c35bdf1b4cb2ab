"""The evaluation protocol's building blocks: key slice, box, simulated clicks."""

from __future__ import annotations

import numpy as np
import pytest

from segloop.engines.base import Session
from segloop.engines.classic import ClassicEngine
from segloop.errors import InputError
from segloop.eval.protocol import ClickProtocol, box_from_mask, key_slice, next_click, run_interaction
from segloop.io.volume import Volume
from segloop.types import BoolArray, Click


def test_key_slice_and_box() -> None:
    truth = np.zeros((10, 12, 5), bool)
    truth[2:5, 3:9, 1] = True
    truth[1:6, 2:10, 3] = True
    assert key_slice(truth) == 3
    assert box_from_mask(truth[:, :, 3]) == (1, 2, 5, 9)
    with pytest.raises(InputError, match="empty"):
        key_slice(np.zeros((3, 3, 3), bool))


def test_box_of_a_single_voxel_is_widened() -> None:
    m = np.zeros((5, 5), bool)
    m[4, 2] = True
    x0, y0, x1, y1 = box_from_mask(m)
    assert (x0, x1) == (3, 4) and (y0, y1) == (2, 3)


def test_click_goes_to_the_centre_of_the_largest_error() -> None:
    truth = np.zeros((30, 30, 9), bool)
    truth[5:25, 5:25, 2:7] = True
    pred = truth.copy()
    pred[5:12, 5:12, 2:7] = False  # a missed block 7x7x5
    pred[26:28, 26:28, 4] = True  # a small spurious blob
    c = next_click(pred, truth, (1.0, 1.0, 1.0))
    assert c is not None and c.label == 1
    assert 7 <= c.x <= 9 and 7 <= c.y <= 9 and c.z == 4
    # once the miss is fixed, the spurious blob gets a negative click
    c2 = next_click(pred | truth, truth, (1.0, 1.0, 1.0))
    assert c2 is not None and c2.label == 0 and (c2.x, c2.y, c2.z) in {
        (x, y, 4) for x in (26, 27) for y in (26, 27)
    }
    assert next_click(truth, truth, (1.0, 1.0, 1.0)) is None


def test_click_on_a_one_slice_grid_goes_to_the_middle_of_the_region() -> None:
    # a 2D picture is the one-slice grid (X, Y, 1): it has no border along z, so the click
    # is the missed region's in-plane farthest point, not its first voxel one slice from a
    # padded z border (benchmarks/devset.md, twelfth pass (c2d))
    truth = np.zeros((60, 40, 1), bool)
    truth[5:55, 5:35, 0] = True
    pred = truth.copy()
    pred[5:55, 5:20, 0] = False  # a missed 50 x 15 band along the left of the object
    c = next_click(pred, truth, (1.0, 1.0, 1.0))
    assert c is not None and c.label == 1 and c.z == 0
    assert 11 <= c.y <= 13 and 12 <= c.x <= 47
    # a volume keeps its z border: the same band on the middle slice of three is clicked
    # on that slice (its voxels are all one slice from the border)
    vol_t = np.concatenate([np.zeros_like(truth), truth, np.zeros_like(truth)], axis=2)
    vol_p = np.concatenate([np.zeros_like(pred), pred, np.zeros_like(pred)], axis=2)
    c3 = next_click(vol_p, vol_t, (1.0, 1.0, 1.0))
    assert c3 is not None and c3.z == 1


def test_drive_counts_slices_not_results_and_cancels() -> None:
    import threading

    from segloop.engines.base import drive
    from segloop.errors import CancelledError
    from segloop.types import SliceResult

    m = np.zeros((2, 2), bool)
    results = [SliceResult(0, m, 1, 2), SliceResult(1, m, 2, 2), SliceResult(0, m, 2, 2)]
    seen: list[int] = []
    assert drive(iter(results), lambda r: seen.append(r.z)) == 2
    assert seen == [0, 1, 0]
    stop = threading.Event()

    def gen():  # type: ignore[no-untyped-def]
        for i in range(5):
            if i == 2:
                stop.set()
            yield SliceResult(i, m, i + 1, 5)

    with pytest.raises(CancelledError, match="after 3 slice"):
        drive(gen(), cancel=stop)


def _block_case() -> tuple[Volume, BoolArray]:
    truth = np.zeros((40, 40, 12), bool)
    truth[10:30, 12:28, 3:10] = True
    truth[10:16, 12:18, 3:10] = False  # a notch the box's first result is likely to miss
    data = np.where(truth, 180.0, 60.0) + np.random.default_rng(1).normal(0, 8, truth.shape)
    data[10:16, 12:18, 3:10] = 175.0  # ...because it looks like the target
    vol = Volume(data=data.astype(np.float32), affine=np.diag([1.0, 1.0, 2.0, 1.0]),
                 source_format="npz")
    return vol, truth


def test_after_refine_sees_each_click_and_its_edit_is_recorded() -> None:
    vol, truth = _block_case()
    calls: list[tuple[Click, BoolArray]] = []

    def fix_all(session: Session, click: Click, before: BoolArray) -> None:
        calls.append((click, before.copy()))
        session.set_mask(truth)  # a what-if: the user's click fixed everything

    run = run_interaction(ClassicEngine(), vol, truth, clicks=3, after_refine=fix_all)
    if not (run.masks[0] != truth).any():
        pytest.fail("the box alone was perfect: the case tests no click")
    # one click, called once with the mask before it; its edit is the step's mask, and with
    # nothing left wrong the protocol stops
    assert len(calls) == 1 and len(run.clicks) == 1 and len(run.masks) == 2
    assert calls[0][0] == run.clicks[0] and (calls[0][1] == run.masks[0]).all()
    assert (run.masks[1] == truth).all()
    with pytest.raises(ValueError, match="segloop protocol only"):
        run_interaction(ClassicEngine(), vol, truth, clicks=1, protocol=ClickProtocol.SAMMED3D,
                        after_refine=fix_all)


def test_without_a_hook_every_click_is_the_engines_own() -> None:
    vol, truth = _block_case()
    seen: list[int] = []
    run = run_interaction(ClassicEngine(), vol, truth, clicks=2, on_step=seen.append)
    assert seen == list(range(len(run.masks))) and len(run.masks) == len(run.clicks) + 1
    assert len(run.seconds) == len(run.masks)
