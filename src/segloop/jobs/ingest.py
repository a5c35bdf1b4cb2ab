"""Read uploads in a separate process, so a hostile or huge upload cannot stall or kill the API.

Concurrency model: :class:`IngestPool` owns a small ``spawn`` process pool
(``ingest_processes`` processes, started with the API and again when an upload begins to arrive
if they are gone: :meth:`IngestPool.warm` starts them and imports the readers in the
background, so no upload waits for a Python start and its imports -- a second and more on a
loaded machine). The API's upload route hands the uploaded file to :meth:`JobStore.create_job`,
which runs in Starlette's thread pool and, with a pool, waits there for :func:`ingest` to run
in a child process. The child does everything heavy -- sniffing, unzipping, decoding, the
canonical NIfTI -- and sends back only an :class:`IngestResult` (a few numbers), never an
array. So the API process's event loop keeps the GIL to itself (``/health`` answers during any
upload) and an upload that exhausts memory takes down the child (the pool is rebuilt; the
client gets a 413), not the server and its embedded workers. With ``ingest_processes = 0`` the
same :func:`ingest` runs in the calling thread. Imports segloop.jobs.files; never FastAPI,
torch or Celery.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.ism, segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from segloop.errors import VolumeTooLargeError
from segloop.jobs import files

__all__ = ["IngestPool", "IngestResult", "ingest"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    """What the job store records about an ingested upload.

    rel: the source file or folder, relative to the job folder. shape / spacing: the canonical
    (RAS) grid, voxels and mm. source_shape / orientation: the grid as uploaded.
    """

    rel: str
    source_format: str
    modality: str | None
    shape: list[int]
    source_shape: list[int]
    spacing: list[float]
    orientation: str


def _warm_up() -> None:
    """Import what :func:`ingest` needs (runs in a fresh child process)."""
    import segloop.io.readers
    import segloop.io.sniff
    import segloop.jobs.image2d_job  # noqa: F401
    from segloop.io.inflate import gzip_opener

    gzip_opener()  # imports python-isal (when installed) before the first .nii.gz arrives


def ingest(upload: Path, dest: Path, limits: files.UploadLimits) -> IngestResult:
    """:func:`segloop.jobs.files.ingest_upload`, summarised (runs in a child process or not)."""
    from segloop.jobs.image2d_job import is_2d_format

    vol, rel = files.ingest_upload(upload, dest, limits)
    can = vol.canonical()
    source_shape = [int(s) for s in vol.shape]
    if is_2d_format(vol.source_format):  # a picture's own shape: (rows, columns)
        source_shape = [source_shape[1], source_shape[0]]
    return IngestResult(rel=rel, source_format=vol.source_format, modality=vol.modality,
                        shape=[int(s) for s in can.shape],
                        source_shape=source_shape,
                        spacing=[round(float(v), 6) for v in can.spacing],
                        orientation=vol.orientation)


class IngestPool:
    """Runs :func:`ingest` in ``processes`` spawned child processes (0: in the caller)."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.processes,
                                                 mp_context=multiprocessing.get_context("spawn"))
            return self._pool

    @property
    def started(self) -> bool:
        """Whether the child processes have been started (by :meth:`warm` or an upload)."""
        return self._pool is not None

    def warm(self) -> None:
        """Start the child processes and their imports now, without waiting for them (the
        upload route calls it as an upload begins); nothing when they run already."""
        if self.processes <= 0:
            return
        with self._lock:
            if self._pool is not None:
                return
        pool = self._executor()
        for _ in range(self.processes):  # a spawn pool starts one process per waiting call
            pool.submit(_warm_up)

    def __call__(self, upload: Path, dest: Path, limits: files.UploadLimits) -> IngestResult:
        if self.processes <= 0:
            return ingest(upload, dest, limits)
        pool = self._executor()
        try:
            return pool.submit(ingest, upload, dest, limits).result()
        except BrokenProcessPool:
            log.error("an ingest process died reading an upload; starting a new pool")
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise VolumeTooLargeError(
                "reading this upload took its ingest process down (out of memory?); "
                "lower its size or ask the administrator to raise the memory limit"
            ) from None

    def close(self) -> None:
        """Stop the child processes."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
