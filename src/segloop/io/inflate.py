"""Open a gzip file for reading with the fastest inflater installed.

python-isal (``isal.igzip``, Intel's ISA-L; PSF-2.0 licence, BSD-3 for ISA-L itself) inflates
about twice as fast as the standard library's zlib, and its reader fills a caller's buffer
directly (``readinto``) instead of in 8 KiB steps: for a 512x512x300 CT uploaded as a 74 MiB
.nii.gz that is about 0.5 s less CPU before the job exists (docs/web.md, *First image*). Where
it is not installed the standard :mod:`gzip` reads the same bytes. Both read the same format:
the output is byte-identical (tests/io/test_inflate.py).

Nothing is chosen at import time: :func:`gzip_opener` looks isal up on each call (cheap once
imported). Imports the standard library, and isal when present; nothing from segloop.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.ism, segloop.train, segloop.eval, segloop.jobs, segloop.datastore, segloop.engines,
segloop.models (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import gzip
import importlib
import io
import zlib
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

__all__ = ["INFLATE_ERRORS", "Inflater", "gzip_opener", "inflate_errors", "open_gzip"]

Opener = Callable[[Path], io.BufferedIOBase]


class Inflater(StrEnum):
    """Which library inflates: ``isal`` (python-isal's igzip) or ``zlib`` (the standard gzip)."""

    ISAL = "isal"
    ZLIB = "zlib"


#: what a corrupt or truncated gzip stream raises with the standard library (isal adds its own
#: error class: :func:`inflate_errors`)
INFLATE_ERRORS: tuple[type[BaseException], ...] = (EOFError, zlib.error, gzip.BadGzipFile)


def _isal() -> Any | None:
    try:
        return importlib.import_module("isal.igzip")
    except ImportError:
        return None


def gzip_opener(prefer: Inflater = Inflater.ISAL) -> tuple[Inflater, Opener]:
    """The inflater used and a function opening a gzip file for binary reading with it:
    isal's when ``prefer`` is ISAL and python-isal is installed, else the standard gzip."""
    igzip = _isal() if prefer is Inflater.ISAL else None
    if igzip is None:
        return Inflater.ZLIB, lambda path: gzip.GzipFile(path, "rb")
    return Inflater.ISAL, lambda path: igzip.IGzipFile(path, "rb")


def open_gzip(path: Path, prefer: Inflater = Inflater.ISAL) -> io.BufferedIOBase:
    """``path`` (a gzip file) opened for binary reading with :func:`gzip_opener`'s inflater."""
    return gzip_opener(prefer)[1](path)


def inflate_errors() -> tuple[type[BaseException], ...]:
    """Every exception a corrupt or truncated gzip stream raises while read, whichever
    inflater reads it (:data:`INFLATE_ERRORS`, plus isal's own error class when installed)."""
    try:
        lib = importlib.import_module("isal.isal_zlib")
    except ImportError:
        return INFLATE_ERRORS
    return (*INFLATE_ERRORS, lib.error)
