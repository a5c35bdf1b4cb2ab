"""``sheet_resume``: a positive click on a slice that a dark sheet emptied (``sheet_cover``)
resumes the tracking outward as far as the next sheet found on the propagation's run-on, not
only its own slice, and not through that next sheet into the copy after it."""

from __future__ import annotations

import numpy as np

from segloop.engines.classic import ClassicEngine
from segloop.eval.protocol import box_from_mask
from segloop.io.volume import Volume
from segloop.types import Prompts

from .plated_column import SPACING as _SP
from .plated_column import plated_column

_PLATES = (14, 30, 46)


def _stack() -> tuple[Volume, np.ndarray, np.ndarray]:
    """A textured column (as ``test_sheets._column``: radius 12 mm, 200 + an in-plane pattern,
    background 60, noise 15, 2 mm slices), 64 slices, crossed by three tilted dark plates 2
    slices thick (150) centred at z 14, 30 and 46: four bodies. Returns the volume, the body
    between the first two plates (the boxed one) and the body between the last two (the
    one past the first sheet, where the click lands)."""
    img, col, zc, rng = plated_column(64, _PLATES)
    img += rng.normal(0, 15.0, img.shape)
    vol = Volume(data=img.astype(np.float32), affine=np.diag([*_SP, 1.0]), source_format="npz",
                 modality="CT")
    boxed = np.asarray(col & (zc > 15) & (zc < 29))
    next_body = np.asarray(col & (zc > 31) & (zc < 45))
    return vol, boxed, next_body


def _box_then_click(**opts: float | None) -> tuple[np.ndarray, np.ndarray, int]:
    vol, boxed, _ = _stack()
    z = 22
    session = ClassicEngine(**opts).open(vol)  # type: ignore[arg-type]
    session.segment_slice(z, Prompts(box=box_from_mask(boxed[:, :, z])))
    list(session.propagate(z))
    after_box = session.mask()
    zc = 38  # the middle of the next body, past the first sheet
    assert not after_box[:, :, zc].any()
    results = list(session.refine(zc, Prompts.make(points=[(24, 24)], labels=[1])))
    mask = session.mask()
    for res in results:  # each slice yielded once, with its final mask
        assert np.array_equal(res.mask, mask[:, :, res.z])
    assert len({res.z for res in results}) == len(results)
    return after_box, mask, zc


def test_a_click_past_the_sheet_resumes_up_to_the_next_sheet() -> None:
    """Box on the body between plates 14 and 30; the box's tracking ends at both plates. A
    positive click at z 38 (the next body): without ``sheet_resume`` only the clicked slice
    gains outward (the tracking stops at its own slice); with it, the slices beyond it
    up to the plate at 46 are tracked, and nothing past that plate."""
    _, _, next_body = _stack()
    after_box, off, zc = _box_then_click(sheet_cover=0.5, sheet_resume=None)
    assert after_box[:, :, 33:].sum() == 0
    _, on, _ = _box_then_click(sheet_cover=0.5, sheet_resume=1.0)
    up = slice(zc + 1, 44)  # the body's slices beyond the click, short of the plate's band
    assert not off[:, :, up].any()
    got = on[:, :, up] & next_body[:, :, up]
    assert got.sum() >= 0.8 * next_body[:, :, up].sum(), got.sum() / next_body[:, :, up].sum()
    assert not on[:, :, 48:].any()  # not through the next sheet into the body after it
