"""A test plugin (loaded through SEGLOOP_PLUGINS): the classic engine slowed to 0.1 s per slice.

It lets a test kill a worker in the middle of a propagation.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, ClassVar

from segloop.engines import register_engine
from segloop.engines.classic import ClassicEngine, ClassicSession
from segloop.types import SliceResult

__all__ = ["SlowClassic"]

DELAY = 0.07


class _SlowSession(ClassicSession):
    def propagate(self, z: int, mask2d: Any = None, object_id: int = 1) -> Iterator[SliceResult]:
        for r in super().propagate(z, mask2d, object_id):
            time.sleep(DELAY)
            yield r


class SlowClassic(ClassicEngine):
    """Classic with a delay per propagated slice."""

    name: ClassVar[str] = "slow-classic"

    def open(self, volume: Any) -> _SlowSession:
        return _SlowSession(volume)


register_engine("slow-classic", SlowClassic)
