"""The warm heap while tracking on a CPU: a tracked slice's large activations come from the
heap (reused, not mmap'ed afresh), the bound comes back afterwards, masks unchanged.

Whether an allocation was served by mmap is read from glibc's own counters (``mallinfo2``:
the number of mmap'ed chunks alive), not from page-fault counts, which depend on the kernel's
transparent huge pages. The speed this buys is measured by ``benchmarks/sam2_cpu_old_new.py
--warm-heap``, not asserted here.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import segloop.engines.sam2.session as session_mod
from segloop.engines.sam2.bench import _synthetic_volume
from segloop.engines.sam2.heap import BOUND_MMAP_THRESHOLD, heap_is_warm, warm_heap
from segloop.engines.sam2.runtime import Runtime, bound_heap_growth
from segloop.engines.sam2.session import Sam2Session
from segloop.models.configs import build_config
from segloop.models.loader import build_model
from segloop.types import Prompts

#: a 256 px hiera-tiny activation's size: above the 4 MiB bound, below the warm threshold
_ACTIVATION = 6 << 20


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mallinfo2() -> Any:
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "mallinfo2"):
        pytest.fail("this test needs glibc >= 2.33 (mallinfo2); segloop's CI image has it")
    fn = libc.mallinfo2
    fn.restype = _MallInfo2
    return fn


def _mmapped(nbytes: int = _ACTIVATION) -> bool:
    """Whether torch's CPU allocator gets an ``nbytes`` tensor from a fresh mmap now."""
    info = _mallinfo2()
    before = info().hblks
    t = torch.empty(nbytes, dtype=torch.uint8)
    during = info().hblks
    del t
    return bool(during > before)


_CYCLE = """
import torch
from segloop.engines.sam2.heap import warm_heap
from segloop.engines.sam2.runtime import bound_heap_growth
import tests.engines.sam2.test_heap as t
assert bound_heap_growth()
seen = [t._mmapped()]
with warm_heap():
    seen.append(t._mmapped())
seen.append(t._mmapped())
with warm_heap(False):
    seen.append(t._mmapped())
print(seen)
"""


def test_large_allocations_come_from_the_heap_only_while_warm() -> None:
    """In a fresh interpreter (a long test process keeps large free chunks in its heap's bins,
    which glibc reuses whatever the threshold): bounded, warm, bounded again, warm off."""
    assert _ACTIVATION > BOUND_MMAP_THRESHOLD
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
    out = subprocess.run([sys.executable, "-c", _CYCLE], env=env, cwd=root, text=True,
                         capture_output=True, timeout=300, check=True).stdout
    assert out.strip() == "[True, False, True, True]", out


def _track(model: Any, slices: int) -> tuple[np.ndarray, list[bool], list[bool]]:
    """Track ``slices`` slices at 256 px; the mask, and at each yield whether the heap was
    warm and whether a large activation would have been mmap'ed."""
    rt = Runtime(model=model, model_name="random-tiny-256", device=torch.device("cpu"),
                 use_bf16=False, image_size=256, window="auto", largest_component=False,
                 fill_holes=0, cache_frames=32, lock=threading.RLock(), cache_mb=64.0,
                 encode_batch=1, device_post=False, warm_heap=True)
    session = Sam2Session(rt, _synthetic_volume(256, slices + 1))
    session.segment_slice(0, Prompts.make(box=(90, 80, 170, 150)))
    warm: list[bool] = []
    mapped: list[bool] = []
    gen: Iterator[Any] = session.propagate(0)
    for _ in gen:
        warm.append(heap_is_warm())
        mapped.append(_mmapped())
    return session.mask(), warm, mapped


def test_tracking_keeps_the_heap_warm_and_masks_unchanged(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """hiera-tiny at 256 px: with the opt-in warm heap, the large activations of tracked
    slices come from the heap, the bound is back once tracking ends, and the masks are those
    of the bounded heap (the code before). Whether the bounded heap mmaps is not checked here:
    after warm tracking, freed chunks in the heap's bins serve large allocations too."""
    torch.set_num_threads(1)
    assert bound_heap_growth()
    torch.manual_seed(0)
    model = build_model(build_config("tiny", 256))
    with torch.inference_mode():
        warm_mask, states, mapped = _track(model, 5)
        assert all(states) and not any(mapped)  # threshold raised: never mmap'ed
        assert not heap_is_warm()  # bounded once tracking ends
        monkeypatch.setattr(session_mod, "warm_heap",
                            lambda enabled=True: contextlib.nullcontext())
        cold_mask, states, _ = _track(model, 5)
        assert not any(states)
    assert warm_mask.any()
    assert np.array_equal(warm_mask, cold_mask)


def test_warm_heap_nests_and_can_be_off() -> None:
    with warm_heap(False):
        assert not heap_is_warm()
    with warm_heap():
        with warm_heap():
            assert heap_is_warm()
        assert heap_is_warm()
    assert not heap_is_warm()
