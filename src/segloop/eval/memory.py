"""Peak-memory probes for evaluation: how much memory one engine step needed.

:class:`PeakMemory` measures, between ``reset()`` and ``peak_mb()``, the peak *extra* memory of
this process above its level at ``reset()``, in MiB:

- ``"rss"`` (Linux): the kernel's resident-set high-water mark ``VmHWM``, reset by writing ``5``
  to ``/proc/self/clear_refs``. Counts everything (numpy, torch CPU tensors, C libraries) at no
  run-time cost; memory freed earlier and reused by the allocator is not counted again, so small
  steps can read 0.
- ``"tracemalloc"`` (elsewhere, or when ``clear_refs`` is not writable): Python's tracemalloc peak,
  which sees numpy but not torch or other C allocations, and slows Python allocations down.

``gpu_peak_mb()`` reports ``torch.cuda.max_memory_allocated`` only when torch is *already
imported* by an engine and CUDA is initialised (this module never imports torch).
Imports the standard library only.
"""

from __future__ import annotations

import logging
import math
import sys
import tracemalloc
from pathlib import Path
from typing import Any

__all__ = ["PeakMemory"]

log = logging.getLogger(__name__)

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_hwm() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """Peak extra memory (MiB) between ``reset()`` and ``peak_mb()``; see the module docstring.

    method: ``"auto"`` (rss when possible), ``"rss"`` or ``"tracemalloc"``. Call ``close()`` when
    done (stops tracemalloc if this object started it).
    """

    def __init__(self, method: str = "auto") -> None:
        if method not in ("auto", "rss", "tracemalloc"):
            raise ValueError(f"unknown memory method {method!r}: use auto, rss or tracemalloc")
        if method in ("auto", "rss") and _status_kib("VmHWM") is not None and _reset_hwm():
            self.method = "rss"
        else:
            if method == "rss":
                log.warning("cannot reset the RSS high-water mark here; using tracemalloc")
            self.method = "tracemalloc"
        self._started_tm = False
        self._base_kib = 0
        if self.method == "tracemalloc" and not tracemalloc.is_tracing():
            tracemalloc.start()
            self._started_tm = True
        self.reset()

    def reset(self) -> None:
        """Start a new measurement window (and reset the GPU peak counter when torch is in use)."""
        if self.method == "rss":
            _reset_hwm()
            self._base_kib = _status_kib("VmRSS") or 0
        else:
            tracemalloc.reset_peak()
            self._base_kib = tracemalloc.get_traced_memory()[0] // 1024
        cuda = self._cuda()
        if cuda is not None:
            cuda.reset_peak_memory_stats()

    def peak_mb(self) -> float:
        """Peak extra memory since ``reset()``, MiB (>= 0)."""
        if self.method == "rss":
            peak = _status_kib("VmHWM") or 0
        else:
            peak = tracemalloc.get_traced_memory()[1] // 1024
        return max(peak - self._base_kib, 0) / 1024.0

    def gpu_peak_mb(self) -> float:
        """CUDA peak allocated memory since ``reset()`` in MiB; NaN when torch/CUDA is not in use."""
        cuda = self._cuda()
        if cuda is None:
            return math.nan
        return float(cuda.max_memory_allocated()) / 2**20

    @staticmethod
    def _cuda() -> Any:
        torch = sys.modules.get("torch")
        if torch is None:
            return None
        cuda = getattr(torch, "cuda", None)
        try:
            if cuda is None or not cuda.is_initialized():
                return None
        except Exception:  # pragma: no cover - exotic torch builds
            return None
        return cuda

    def close(self) -> None:
        """Stop tracemalloc if this probe started it."""
        if self._started_tm and tracemalloc.is_tracing():
            tracemalloc.stop()
        self._started_tm = False
