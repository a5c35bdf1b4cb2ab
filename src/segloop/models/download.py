"""A small resumable HTTP(S) downloader with integrity checks (urllib only, no torch).

Downloads go to ``<dest>.part`` and are resumed with an HTTP ``Range`` request when that file
exists; a dropped connection is retried (resuming) a few times. The finished file is checked
against the expected size and SHA-256, then renamed into place atomically. Offline mode
(``SEGLOOP_OFFLINE`` or ``HF_HUB_OFFLINE`` set to 1/true/yes) refuses to touch the network.
``HF_TOKEN`` is sent to the hub endpoint only (never to the host a download redirects to).

Why not ``huggingface_hub.hf_hub_download``: it needs hub-specific response headers
(``X-Repo-Commit``, ``ETag``) and keeps files in its own cache layout, so it cannot be pointed at
a plain file server (a mirror, an air-gapped copy, the tests' local server). Hugging Face
``resolve`` URLs are ordinary HTTPS with redirects and Range support, which this module uses
directly. Must not import torch.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from segloop.errors import ModelNotAvailableError
from segloop.fsio import replace_file
from segloop.models.hub import hf_endpoint

__all__ = ["DownloadError", "download", "is_offline", "sha256_file"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


class DownloadError(ModelNotAvailableError):
    """A download failed (network, HTTP status, size or checksum mismatch)."""


def is_offline() -> bool:
    """True when ``SEGLOOP_OFFLINE`` or ``HF_HUB_OFFLINE`` asks for no network access."""
    for var in ("SEGLOOP_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class _StripAuthOnRedirect(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never send the hub token to another host (e.g. a CDN)."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(
                req.full_url).netloc:
            new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_StripAuthOnRedirect())


def _token_for(url: str) -> str | None:
    """``HF_TOKEN`` (or ``HUGGING_FACE_HUB_TOKEN``) when ``url`` is on the hub endpoint."""
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not token:
        return None
    same = urllib.parse.urlsplit(url).netloc == urllib.parse.urlsplit(hf_endpoint()).netloc
    return token if same else None


def _fetch_once(url: str, part: Path, expected_size: int | None, progress: bool,
                timeout: float) -> None:
    """One attempt: append to ``part`` from its current size (Range), or restart on 200."""
    offset = part.stat().st_size if part.exists() else 0
    if expected_size is not None and offset > expected_size:
        part.unlink()
        offset = 0
    if expected_size is not None and offset == expected_size:
        return
    req = urllib.request.Request(url, headers={"User-Agent": "segloop"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    token = _token_for(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        resp = _OPENER.open(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # range not satisfiable: the part is complete or stale
            return
        raise DownloadError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    with resp:
        status = getattr(resp, "status", 200)
        if offset and status != 206:
            log.info("server ignored the Range request; restarting %s from the beginning", url)
            offset = 0
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length is not None else expected_size
        from tqdm import tqdm

        mode = "ab" if offset else "wb"
        with open(part, mode) as f, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name.removesuffix(".part"), disable=not progress, leave=False,
        ) as bar:
            while True:
                chunk = resp.read(_CHUNK)
                if not chunk:
                    break
                f.write(chunk)
                bar.update(len(chunk))
        got = part.stat().st_size
        if length is not None and got < total:  # type: ignore[operator]
            raise http.client.IncompleteRead(b"", total - got)  # type: ignore[operator]


def download(
    url: str,
    dest: Path,
    *,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    progress: bool = False,
    retries: int = 3,
    timeout: float = 60.0,
) -> str:
    """Download ``url`` to ``dest`` (resuming ``dest.part``); return the file's SHA-256.

    Raises DownloadError when offline, on HTTP errors, after ``retries`` failed resumptions,
    or when the size or SHA-256 differs from the expected values (the bad file is deleted).
    """
    if is_offline():
        raise DownloadError(
            f"offline mode is on (SEGLOOP_OFFLINE/HF_HUB_OFFLINE): cannot download {url};"
            " unset it, or copy the file here and use `segloop models import FILE --as NAME`"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last: Exception | None = None
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, expected_size, progress, timeout)
            last = None
            break
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, DownloadError):
                raise
            last = exc
            log.warning("download of %s interrupted (%s); attempt %d/%d", url, exc, attempt + 1,
                        retries + 1)
            time.sleep(min(0.2 * (attempt + 1), 2.0))
    if last is not None:
        have = part.stat().st_size if part.exists() else 0
        raise DownloadError(
            f"download of {url} failed after {retries + 1} attempt(s): {last}; {have} bytes kept"
            " in the partial file, run the same command again to resume"
        ) from last
    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        part.unlink()
        raise DownloadError(
            f"downloaded {size} bytes from {url} but expected {expected_size}: the file was"
            " deleted, run the command again"
        )
    digest = sha256_file(part)
    if expected_sha256 is not None and digest != expected_sha256.lower():
        part.unlink()
        raise DownloadError(
            f"checksum mismatch for {url}: expected SHA-256 {expected_sha256}, got {digest}; the"
            " corrupted file was deleted, run the command again"
        )
    replace_file(part, dest)
    return digest
