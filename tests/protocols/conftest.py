"""A live `segloop serve` (a real uvicorn process) for the protocol tests, and small volumes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest

RUN_CMD = (
    "import argparse, sys; from segloop.cli import serve, users; "
    "p = argparse.ArgumentParser(); s = p.add_subparsers(); "
    "[m.register(s) for m in (serve, users)]; a = p.parse_args(sys.argv[1:]); "
    "sys.exit(a.func(a))"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running server: its base URL and home."""

    url: str
    home: Path
    proc: subprocess.Popen[bytes]
    env: dict[str, str]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover
            self.proc.kill()
            self.proc.wait()


def add_user(home: Path, name: str, role: str) -> str:
    """A user in the server's job store (as `segloop users add` makes it); returns the key."""
    from segloop.config import load_settings
    from segloop.jobs.store import JobStore

    store = JobStore(load_settings(None, home=home))
    try:
        return store.add_user(name, role)
    finally:
        store.close()


def start_server(home: Path, port: int | None = None, **env: str) -> Server:
    port = port or free_port()
    full = {**os.environ, "SEGLOOP_HOME": str(home), "SEGLOOP_DEFAULT_ENGINE": "classic",
            "SEGLOOP_JSON_LOGS": "false", "SEGLOOP_LOG_LEVEL": "WARNING", **env}
    home.mkdir(parents=True, exist_ok=True)
    log = open(home.parent / f"serve-{port}.log", "wb")  # noqa: SIM115 - the process owns it
    proc = subprocess.Popen([sys.executable, "-c", RUN_CMD, "serve", "--port", str(port)],
                            env=full, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        if proc.poll() is not None:
            raise AssertionError((home.parent / f"serve-{port}.log").read_text(encoding="utf-8"))
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return Server(url, home, proc, full)
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not start")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start servers (keyword arguments: SEGLOOP_* environment); all stop at the end."""
    started: list[Server] = []

    def make(home: Path | None = None, **env: str) -> Server:
        s = start_server(home or tmp_path / "home", **env)
        started.append(s)
        return s

    yield make
    for s in started:
        if s.proc.poll() is None:
            s.stop()


def blob_volume(shape: tuple[int, int, int] = (48, 40, 16), seed: int = 0) -> np.ndarray:
    """int16 CT-like volume: a bright ellipsoid (centre 24, 18, 8; radii 9, 7, 5 voxels)
    in soft tissue with noise."""
    rng = np.random.default_rng(seed)
    i, j, k = np.indices(shape)
    inside = ((i - 24) / 9.0) ** 2 + ((j - 18) / 7.0) ** 2 + ((k - 8) / 5.0) ** 2 <= 1
    vol = np.where(inside, 250, 40).astype(np.int16)
    vol = vol + rng.normal(0, 8, shape).astype(np.int16)
    return vol


def write_lps_nifti(path: Path, vol: np.ndarray) -> np.ndarray:
    """Write ``vol`` as a NIfTI stored LPS (axes point left, posterior, superior); returns
    the affine."""
    affine = np.array([[-0.8, 0, 0, 20.0], [0, -0.8, 0, 15.0], [0, 0, 2.5, -30.0],
                       [0, 0, 0, 1]])
    img = nib.Nifti1Image(vol, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return affine
