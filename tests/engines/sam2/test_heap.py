"""The warm heap while tracking on a CPU: a tracked slice's activations reuse freed pages
(few page faults), the bound comes back afterwards, masks unchanged."""

from __future__ import annotations

import contextlib
import resource
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

import segloop.engines.sam2.session as session_mod
from segloop.engines.sam2.bench import _synthetic_volume
from segloop.engines.sam2.heap import heap_is_warm, warm_heap
from segloop.engines.sam2.runtime import Runtime, bound_heap_growth
from segloop.engines.sam2.session import Sam2Session
from segloop.models.configs import build_config
from segloop.models.loader import build_model
from segloop.types import Prompts


def _faults() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


def _track(model: Any, slices: int) -> tuple[np.ndarray, int, list[bool]]:
    """Track ``slices`` slices at 256 px; minor page faults of the last two, and whether the
    heap was warm at each yield."""
    rt = Runtime(model=model, model_name="random-tiny-256", device=torch.device("cpu"),
                 use_bf16=False, image_size=256, window="auto", largest_component=False,
                 fill_holes=0, cache_frames=32, lock=threading.RLock(), cache_mb=64.0,
                 encode_batch=1, device_post=False, warm_heap=True)
    session = Sam2Session(rt, _synthetic_volume(256, slices + 1))
    session.segment_slice(0, Prompts.make(box=(90, 80, 170, 150)))
    warm: list[bool] = []
    gen: Iterator[Any] = session.propagate(0)
    for _ in range(slices - 2):
        next(gen)
        warm.append(heap_is_warm())
    f0 = _faults()
    for _ in gen:
        warm.append(heap_is_warm())
    return session.mask(), _faults() - f0, warm


def test_tracked_slices_reuse_freed_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """hiera-tiny at 256 px (activations up to ~6 MB, above the 4 MiB mmap bound): with the
    opt-in warm heap, tracked slices fault in far fewer fresh pages than with every large
    activation mmap'ed (the code before), and give the same masks."""
    torch.set_num_threads(1)
    assert bound_heap_growth()  # as the engine does on a CPU (this machine runs glibc)
    torch.manual_seed(0)
    model = build_model(build_config("tiny", 256))
    with torch.inference_mode():
        warm_mask, warm_faults, states = _track(model, 5)
        assert all(states) and not heap_is_warm()  # warm while tracking, bounded afterwards
        monkeypatch.setattr(session_mod, "warm_heap",
                            lambda enabled=True: contextlib.nullcontext())
        cold_mask, cold_faults, _ = _track(model, 5)
    assert cold_faults > 2000, cold_faults  # the measurement sees the mmap'ed activations
    assert warm_faults * 10 < cold_faults, (warm_faults, cold_faults)
    assert np.array_equal(warm_mask, cold_mask)


def test_warm_heap_nests_and_can_be_off() -> None:
    with warm_heap(False):
        assert not heap_is_warm()
    with warm_heap():
        with warm_heap():
            assert heap_is_warm()
        assert heap_is_warm()
    assert not heap_is_warm()
