"""An estimate of how many bytes an engine session holds, for bounding the session cache.

:func:`estimate_bytes` walks an object's attributes (dataclass fields, ``__dict__``,
``__slots__``), dicts, lists and tuples a few levels deep and adds up the buffers it finds:
NumPy arrays (``nbytes``), torch tensors (``element_size() * nelement()``, whatever the
device), bytes. An object with an integer ``nbytes`` attribute reports itself. Arrays that
share one buffer (views) are counted once. It is an estimate: Python object overhead and
memory held inside C libraries are not seen. Imports numpy only; never torch (a tensor is
recognised by its methods).
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.ism, segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["estimate_bytes"]


def _tensor_bytes(obj: Any) -> int | None:
    size = getattr(obj, "element_size", None)
    count = getattr(obj, "nelement", None)
    if callable(size) and callable(count) and hasattr(obj, "untyped_storage"):
        try:
            return int(size()) * int(count())
        except Exception:  # pragma: no cover - exotic tensor subclasses
            return 0
    return None


def _children(obj: Any) -> list[Any]:
    if isinstance(obj, dict):
        return [*obj.keys(), *obj.values()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return list(obj)
    out: list[Any] = []
    d = getattr(obj, "__dict__", None)
    if isinstance(d, dict):
        out.extend(d.values())
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if isinstance(name, str) and hasattr(obj, name):
                out.append(getattr(obj, name))
    return out


def estimate_bytes(obj: Any, max_depth: int = 6) -> int:
    """The bytes of the arrays / tensors reachable from ``obj`` (see the module docstring)."""
    seen: set[int] = set()
    buffers: set[int] = set()
    total = 0
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        cur, depth = stack.pop()
        if id(cur) in seen or cur is None or isinstance(cur, (int, float, str, bool, type)):
            continue
        seen.add(id(cur))
        if isinstance(cur, np.ndarray):
            base = cur
            while isinstance(base.base, np.ndarray):
                base = base.base
            if id(base) not in buffers:
                buffers.add(id(base))
                total += int(base.nbytes)
            continue
        if isinstance(cur, (bytes, bytearray, memoryview)):
            total += len(cur)
            continue
        tb = _tensor_bytes(cur)
        if tb is not None:
            total += tb
            continue
        own = getattr(cur, "nbytes", None)
        if isinstance(own, int) and not isinstance(own, bool):
            total += own
            continue
        if depth < max_depth:
            stack.extend((c, depth + 1) for c in _children(cur))
    return total
