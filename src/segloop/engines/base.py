"""The engine protocol every segmentation engine implements, and helpers to drive it.

An :class:`Engine` holds what is shared by all volumes of a process (weights, settings); its
``open()`` returns a :class:`Session` that holds one volume's state (embeddings, prompts, the
current 3D masks of each object). Long work (``propagate``, ``refine``) is a generator of
:class:`~segloop.types.SliceResult`: the caller reports progress per slice and cancels by
stopping the iteration (see :func:`drive`). Must not import FastAPI, Celery or the CLI.

Semantics shared by all engines (the contract test in tests/engines checks them):

- ``segment_slice(z, prompts, object_id)``: the 2D mask ``(X, Y)`` bool on slice z; it is stored
  as that object's mask on slice z (other slices untouched) and slice z becomes an *anchor*.
- ``propagate(z, mask2d=None, object_id)``: from slice z (its stored mask, or ``mask2d``), fill
  the object's mask on every other slice, both directions, up to the next anchor or the end of
  the volume. Yields each slice as it is computed (``done`` +1, ``total`` fixed); a later
  result for the same slice supersedes the earlier one (e.g. once a 3D filter ran, with
  ``done == total``): the last result of a slice is its stored mask. It may trim (never
  grow) its start slice, e.g. to keep the largest 3D component as MedSAM2 does.
  ``first_slice`` / ``last_slice`` (keyword-only, inclusive) end the propagation there: the
  slices beyond are neither computed nor changed (``ObjectState.span`` stops at them; a
  propagation stops at the range as it stops at an anchor).
- ``refine(z, prompts, object_id)``: a correction on slice z. Prompts are *added* to those already
  given on slice z (a box replaces the old box); when slice z had no prompts the correction acts
  on the current mask there. Slice z becomes an anchor and the object is re-propagated from z
  in both directions up to the neighbouring anchors.
- ``mask(object_id)``: the current ``(X, Y, Z)`` bool mask; ``set_mask`` replaces it (an edit).

CT window: an engine that scales intensities with the CT window (``segment --window``, a
volume's ``meta["window"]``, the one table ``io.windowing.CT_PRESETS``) declares the class
attribute ``applies_window: ClassVar[bool] = True``; an engine without it ignores the window, and
the CLI says so (:func:`applies_window`, ``segloop engines``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import ClassVar, Protocol, runtime_checkable

from segloop.errors import CancelledError
from segloop.io.volume import Volume
from segloop.types import BoolArray, Prompts, SliceResult

__all__ = ["Engine", "ProgressCallback", "Session", "applies_window", "drive"]

ProgressCallback = Callable[[SliceResult], None]


@runtime_checkable
class Session(Protocol):
    """One volume's interactive state. Voxel axes are the canonical (x, y, z) of the volume."""

    @property
    def shape(self) -> tuple[int, int, int]:
        """Canonical volume shape ``(X, Y, Z)``."""
        ...

    def segment_slice(self, z: int, prompts: Prompts, object_id: int = 1) -> BoolArray:
        """Segment axial slice z from prompts; returns an ``(X, Y)`` bool mask."""
        ...

    def propagate(
        self, z: int, mask2d: BoolArray | None = None, object_id: int = 1, *,
        first_slice: int | None = None, last_slice: int | None = None
    ) -> Iterator[SliceResult]:
        """Propagate the mask of slice z through the volume in both directions, no further
        than ``first_slice`` / ``last_slice`` (inclusive; None: to the volume's end)."""
        ...

    def refine(self, z: int, prompts: Prompts, object_id: int = 1, *,
               first_slice: int | None = None, last_slice: int | None = None
               ) -> Iterator[SliceResult]:
        """Apply a correction on slice z and re-propagate from it, within the slice range."""
        ...

    def mask(self, object_id: int = 1) -> BoolArray:
        """The current ``(X, Y, Z)`` bool mask of one object (all False if never segmented)."""
        ...

    def set_mask(self, mask3d: BoolArray, object_id: int = 1) -> None:
        """Replace an object's 3D mask (e.g. a user's brush edit); every non-empty slice anchors."""
        ...

    def objects(self) -> list[int]:
        """Ids of the objects this session has masks for."""
        ...


class Engine(Protocol):
    """A segmentation engine. Constructed once per process; ``open`` is cheap to call per volume."""

    name: ClassVar[str]
    #: one line shown by ``segloop engines`` and the API
    description: ClassVar[str]

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None when the engine can run here, else why not (missing weights, package...)."""
        ...

    def open(self, volume: Volume) -> Session:
        """Open a session on ``volume`` (any orientation; the session works on its canonical view)."""
        ...


def applies_window(engine: object) -> bool:
    """Whether an engine (class or instance) applies the CT window; False when it does not
    declare ``applies_window = True`` (e.g. the classic engine works on raw intensities)."""
    return bool(getattr(engine, "applies_window", False))


def drive(
    results: Iterator[SliceResult],
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | Callable[[], bool] | None = None,
) -> int:
    """Run a propagation/refinement generator to the end; return the number of slices done.

    ``on_progress`` is called after every slice. ``cancel`` is checked between slices; when it
    is set the generator is closed and :class:`CancelledError` is raised (the session keeps
    the slices already computed).
    """
    n = 0  # slices done: the last result's counter (a superseding result does not add one)
    is_cancelled: Callable[[], bool]
    if cancel is None:
        is_cancelled = lambda: False  # noqa: E731
    elif isinstance(cancel, threading.Event):
        is_cancelled = cancel.is_set
    else:
        is_cancelled = cancel
    try:
        for res in results:
            n = res.done
            if on_progress is not None:
                on_progress(res)
            if is_cancelled():
                raise CancelledError(f"cancelled after {n} slice(s)")
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()
    return n
