"""A warm heap while a propagation tracks slices on a CPU: freed activations are reused, not
returned to the kernel and faulted in again on the next slice.

On a CPU the engine has glibc serve every allocation of 4 MiB and more by mmap
(:func:`~segloop.engines.sam2.runtime.bound_heap_growth`), which keeps peak RSS bounded but
returns each large activation to the kernel when torch frees it: the next slice's
activations then start as fresh pages, zero-filled one 4 KiB page fault at a time. At 512 px
that is ~135,000 minor faults (~540 MB zero-filled) per image-encoder call, about a fifth of
its CPU time, and the profile books it as ``aten::copy_`` (the first write into each new
output). While tracking, :func:`warm_heap` raises the mmap threshold to 32 MiB and stops
trimming, so a slice's activations reuse the previous slice's pages; when the last tracking
of the process ends, the mmap threshold goes back to its bound and ``malloc_trim`` gives the
freed heap back. Process-wide (reference-counted across concurrent propagations); a no-op
where there is no glibc. Allocation policy only: the arithmetic, hence the masks, is unchanged.
The price is heap fragmentation: a slice's long-lived results (cached features, the memory
bank) sit between its freed activations, so the heap grows past the live peak (peak RSS of
a 512x512x300 CT: 1,097 MB instead of 978 MB, over the 1 GB bound). Hence opt-in: the
engine option ``warm_heap`` (:class:`~segloop.engines.sam2.runtime.Runtime`'s field).
Must not import torch, FastAPI, Celery or the CLI.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["BOUND_MMAP_THRESHOLD", "WARM_MMAP_THRESHOLD", "bound_heap", "heap_is_warm",
           "set_mmap_threshold", "warm_heap"]

#: glibc's mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's default trim threshold (bytes of free heap top kept before giving it back)
_DEFAULT_TRIM = 128 * 1024
#: the mmap threshold outside tracking (bounded peak RSS)
BOUND_MMAP_THRESHOLD = 4 << 20
#: the mmap threshold while tracking: a 512 px slice's largest activations (~25 MB) come
#: from the heap
WARM_MMAP_THRESHOLD = 32 << 20
#: the trim threshold while tracking: never trim
_WARM_TRIM = 1 << 30


@dataclass
class _Heap:
    """The process's glibc handle (looked up once) and how many propagations keep it warm."""

    depth: int = 0
    libc: Any = None
    looked: bool = False


_lock = threading.Lock()
_heap = _Heap()


def _libc() -> Any:
    if not _heap.looked:
        _heap.looked = True
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
            if libc is not None and not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
                libc = None
        except OSError:
            libc = None
        _heap.libc = libc
    return _heap.libc


def set_mmap_threshold(threshold: int = BOUND_MMAP_THRESHOLD) -> bool:
    """Serve allocations of ``threshold`` bytes and more by mmap (returned on free); False
    where there is no glibc."""
    libc = _libc()
    return libc is not None and bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold)))


def bound_heap(threshold: int = BOUND_MMAP_THRESHOLD) -> bool:
    """:func:`set_mmap_threshold` and glibc's default trimming; False where there is no glibc."""
    ok = set_mmap_threshold(threshold)
    return ok and bool(_libc().mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM))


def heap_is_warm() -> bool:
    """Whether some propagation of this process is tracking with a warm heap now."""
    with _lock:
        return bool(_heap.depth) and _libc() is not None


@contextmanager
def warm_heap(enabled: bool = True) -> Iterator[None]:
    """Keep freed memory in the heap for reuse while the block runs (see the module
    docstring); ``enabled`` False: nothing changes."""
    libc = _libc() if enabled else None
    if libc is None:
        yield
        return
    with _lock:
        if _heap.depth == 0:
            libc.mallopt(_M_MMAP_THRESHOLD, WARM_MMAP_THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, _WARM_TRIM)
        _heap.depth += 1
    try:
        yield
    finally:
        with _lock:
            _heap.depth -= 1
            if _heap.depth == 0:
                bound_heap()
                libc.malloc_trim(0)
