"""Durable file replacement: the one atomic-write helper every writer in segloop uses.

A write goes to a temporary name in the destination's folder, is flushed and ``fsync``-ed,
renamed over the destination, and the folder is ``fsync``-ed, so a crash or power loss leaves
either the old file or the new one, never a torn or empty one. Folders built beside their
destination (a converted model, a job folder) are committed the same way.

The bottom layer: standard library only; must not import anything from segloop.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_dir",
    "fsync_file",
    "replace_dir",
    "replace_file",
    "temp_name",
]


def temp_name(dest: Path) -> Path:
    """A fresh hidden name beside ``dest`` (same folder, same suffix)."""
    return dest.with_name(f".tmp-{uuid.uuid4().hex[:12]}-{dest.name}")


def fsync_file(path: str | Path) -> None:
    """Flush ``path``'s data to disk (whichever handle wrote it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be
    opened (Windows)."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(src: str | Path, dest: str | Path) -> None:
    """Durably rename the finished file ``src`` over ``dest`` (same filesystem)."""
    fsync_file(src)
    os.replace(src, dest)
    fsync_dir(Path(dest).parent)


def _fsync_tree(root: Path) -> None:
    for folder, _dirs, names in os.walk(root):
        for name in names:
            p = Path(folder) / name
            if not p.is_symlink():
                fsync_file(p)
        fsync_dir(folder)


def replace_dir(src: str | Path, dest: str | Path, *, overwrite: bool = False) -> None:
    """Durably move the finished folder ``src`` to ``dest`` (same filesystem).

    Every file under ``src`` is flushed first. With ``overwrite`` an existing ``dest`` is
    removed just before the rename; without it a non-empty ``dest`` is an ``OSError``.
    """
    src, dest = Path(src), Path(dest)
    _fsync_tree(src)
    if overwrite:
        shutil.rmtree(dest, ignore_errors=True)
    os.replace(src, dest)
    fsync_dir(dest.parent)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix) for a writer to fill; on success it
    replaces ``path`` durably, on error it is removed and ``path`` is untouched. ``durable=False``
    skips the two ``fsync`` calls (still atomic): for throwaway files such as a result that is
    sent and deleted, where waiting for the disk is pure latency."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(dest)
    try:
        yield tmp
        if durable:
            replace_file(tmp, dest)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically and durably (parent folders are created);
    ``durable=False`` as in :func:`atomic_path`."""
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically and durably (parent folders are created)."""
    atomic_write_bytes(path, text.encode(encoding))
