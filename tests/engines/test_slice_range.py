"""Every engine stops its propagation at the slice range (``first_slice`` / ``last_slice``).

The range is passed into ``Session.propagate`` / ``refine``: the slices beyond it are never
computed (counted by the results the generator yields, one per slice computed), and inside
the range the masks equal what an open propagation gives there (the old behaviour computed
everything and cleared the outside afterwards). Engines needing weights get test weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from segloop.engines import engine_class, engine_names
from segloop.engines.base import Engine, Session
from segloop.eval.protocol import box_from_mask, key_slice
from segloop.types import Prompts, SliceResult

from .provision import PROVISIONERS
from .synthetic import phantom

FIRST, LAST = 5, 10  # the phantom has 16 slices; the prompt goes on its key slice (7 or 8)


def _engine(name: str) -> Engine:
    cls = engine_class(name)
    if cls.unavailable_reason() is not None:
        prov = PROVISIONERS.get(name)
        assert prov is not None, f"engine {name!r} has no test provisioner"
        prov(Path(os.environ["SEGLOOP_HOME"]))
    assert cls.unavailable_reason() is None, cls.unavailable_reason()
    engine: Engine = cls()
    return engine


def _started(engine: Engine) -> tuple[Session, int]:
    """A fresh session on the phantom with the bright ellipsoid segmented on its key slice."""
    ph = phantom()
    session = engine.open(ph.volume)
    z = key_slice(ph.bright)
    session.segment_slice(z, Prompts(box=box_from_mask(ph.bright[:, :, z])), object_id=1)
    return session, z


def _computed(results: object) -> list[int]:
    """The slices a propagation/refinement computed, in order (a superseding result of a slice
    already yielded, e.g. after a 3D filter, is not a new computation)."""
    seen: list[int] = []
    for r in results:  # type: ignore[attr-defined]
        assert isinstance(r, SliceResult)
        if r.z not in seen:
            seen.append(r.z)
    return seen


@pytest.mark.parametrize("name", engine_names())
def test_propagation_stops_at_the_range(name: str) -> None:
    engine = _engine(name)
    open_s, z = _started(engine)
    assert FIRST < z < LAST
    everywhere = _computed(open_s.propagate(z, object_id=1))
    ranged_s, _ = _started(engine)
    ranged = _computed(ranged_s.propagate(z, object_id=1, first_slice=FIRST, last_slice=LAST))
    inside = [k for k in range(FIRST, LAST + 1) if k != z]
    assert len(everywhere) >= 15, everywhere  # the open run visits the whole volume
    assert sorted(set(ranged) - {z}) == inside, f"computed {ranged}, range {FIRST}..{LAST}"
    a, b = open_s.mask(1), ranged_s.mask(1)
    assert np.array_equal(a[:, :, FIRST:LAST + 1], b[:, :, FIRST:LAST + 1]), \
        "inside the range the masks differ from an open propagation"
    assert not b[:, :, :FIRST].any() and not b[:, :, LAST + 1:].any(), "outside stays untouched"


@pytest.mark.parametrize("name", engine_names())
def test_refinement_stops_at_the_range(name: str) -> None:
    engine = _engine(name)
    sessions = []
    for _ in range(2):
        s, z = _started(engine)
        _computed(s.propagate(z, object_id=1))
        sessions.append(s)
    open_s, ranged_s = sessions
    before = ranged_s.mask(1)
    zc = z + 1
    on = np.argwhere(before[:, :, zc])
    x, y = (int(v) for v in (on[len(on) // 2] if len(on) else (20, 22)))
    fix = Prompts.make(points=[(x, y)], labels=[0])
    _computed(open_s.refine(zc, fix, object_id=1))
    ranged = _computed(ranged_s.refine(zc, fix, object_id=1, first_slice=FIRST, last_slice=LAST))
    assert all(FIRST <= k <= LAST for k in ranged), f"computed {ranged}, range {FIRST}..{LAST}"
    a, b = open_s.mask(1), ranged_s.mask(1)
    assert np.array_equal(a[:, :, FIRST:LAST + 1], b[:, :, FIRST:LAST + 1])
    # beyond the range the object is as it was before the correction
    assert np.array_equal(b[:, :, :FIRST], before[:, :, :FIRST])
    assert np.array_equal(b[:, :, LAST + 1:], before[:, :, LAST + 1:])
