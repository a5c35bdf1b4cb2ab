"""An exclusive lock on a file, shared by threads and processes (``fcntl.flock``).

Every writer of the datastore (the API process, each Celery worker, each thread) takes it
around "place the case folder, rewrite the manifest", so concurrent reviews never lose a row.
``flock`` locks belong to an open file description: two threads of one process that each open
the lock file exclude each other just like two processes do, and the kernel drops the lock when
its holder dies, so a crash never leaves the datastore locked. POSIX only; on a network
filesystem the lock is as good as that filesystem's ``flock`` (local disks and NFSv4 are fine).

Imports only the standard library; must not import jobs, api, train or eval.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["exclusive"]


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block; blocks
    until every other holder, in any thread or process, has released it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
