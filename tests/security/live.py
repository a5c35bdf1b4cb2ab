"""A real ``segloop serve`` process for the upload hardening tests (shared by tests/security and
tests/reliability): its own SEGLOOP_HOME, a free port, settings from environment variables,
and the server's resident memory read from /proc."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import nibabel as nib
import numpy as np

__all__ = ["Server", "nifti_bytes"]

RUN_CMD = (
    "import argparse, sys; from segloop.cli import serve; "
    "p = argparse.ArgumentParser(); s = p.add_subparsers(); serve.register(s); "
    "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``segloop serve`` on 127.0.0.1 (no keys needed: loopback), data in ``home``.

    ``env``: extra settings as ``SEGLOOP_*`` variables (e.g. ``{"SEGLOOP_MAX_POINTS": "10"}``).
    """

    def __init__(self, home: Path, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        src = str(Path(__file__).resolve().parents[2] / "src")
        self.env = {**os.environ, "SEGLOOP_HOME": str(home), "SEGLOOP_DEFAULT_ENGINE": "classic",
                    "SEGLOOP_JSON_LOGS": "false", "SEGLOOP_LOG_LEVEL": "WARNING",
                    "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
                    **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def __enter__(self) -> Server:
        self.log = open(self.home.parent / f"server-{self.port}.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-c", RUN_CMD, "serve", "--port",
                                      str(self.port)], env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"segloop serve exited: {self.output()}")
            try:
                if self.client.get("/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("segloop serve did not start")

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.client.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()

    def output(self) -> str:
        """What the server printed so far."""
        self.log.flush()
        return (self.home.parent / f"server-{self.port}.log").read_text(errors="replace")

    def rss_mb(self) -> float:
        """The server process's resident memory now (MiB)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def hwm_mb(self) -> float:
        """The server process's peak resident memory so far (MiB)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM")

    def upload(self, data: bytes, name: str = "upload.bin") -> httpx.Response:
        """POST ``data`` as the multipart file field ``file``."""
        return self.client.post("/api/v1/jobs", files={"file": (name, data)})

    def jobs(self) -> list[dict[str, Any]]:
        """The jobs the local admin sees."""
        out: list[dict[str, Any]] = self.client.get("/api/v1/jobs").json()
        return out

    def leftovers(self) -> list[Path]:
        """Files under tmp/ (must stay empty after a refused upload)."""
        return [p for p in (self.home / "tmp").rglob("*") if p.is_file()]


def nifti_bytes(arr: np.ndarray[Any, Any], affine: np.ndarray[Any, Any] | None = None) -> bytes:
    """A .nii file in memory."""
    img = nib.Nifti1Image(arr, np.eye(4) if affine is None else affine)
    return io.BytesIO(img.to_bytes()).getvalue()
