"""Waiting for a live ``segloop serve`` (or any HTTP server with ``/health``) to answer.

Used by the tests that start real server processes. Imports httpx; no segloop code.
"""

from __future__ import annotations

import subprocess
import time

import httpx

__all__ = ["wait_for_health"]


def wait_for_health(url: str, proc: subprocess.Popen[bytes] | None = None,
                    seconds: float = 30.0, log: str = "") -> None:
    """Return once ``GET url/health`` answers 200; AssertionError when ``proc`` exits first
    (with ``log``'s text, if given) or after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}: {log}".rstrip(": "))
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the server at {url} did not start within {seconds:.0f} s")
