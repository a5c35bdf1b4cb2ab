"""One embedded server per data directory: an exclusive lock on ``<home>/serve.lock``.

An embedded ``segloop serve`` runs its tasks in its own threads and, on start, requeues the
tasks a previous server left queued or running. A second one on the same home would take the
first one's live tasks for orphans and run them again, so the embedded queue holds this lock
for its whole life; the second server stops with "another segloop serve is using HOME (pid N)".
The lock is an ``fcntl.flock`` on an open file, so the kernel releases it when its holder
exits or dies (a SIGKILLed server never blocks the next start). Celery-mode API processes take
no lock: several of them may share a home, and their workers requeue only stale tasks.

Imports only the standard library and segloop.jobs.errors; must not import api or worker.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from segloop.jobs.errors import HomeInUseError

__all__ = ["LOCK_NAME", "HomeLock"]

LOCK_NAME = "serve.lock"


class HomeLock:
    """The lock of one data directory; :meth:`acquire` raises HomeInUseError when taken."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.path = self.home / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (non-blocking) and write this process's id into the lock file."""
        if self._fd is not None:
            return
        self.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise HomeInUseError(
                f"another segloop serve is using {self.home} (pid {holder}): stop it, or give "
                "this one its own --home (several API processes sharing a home need "
                "--queue celery)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock back (also done by the kernel when the process ends)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
