"""Real processes for the reliability tests: `segloop serve`, `segloop worker` and a private
redis-server (own port, killed and restarted at will), all started through the CLI with this
checkout's sources first on the path."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
import pytest

from liveserver import wait_for_health

REPO = Path(__file__).resolve().parents[2]
PLUGIN_DIR = REPO / "tests" / "worker"  # slow_engine_plugin: classic slowed per slice
CLI = "import sys; from segloop.cli import main; sys.exit(main())"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(settings: dict[str, Any]) -> dict[str, str]:
    """The environment of a child process: SEGLOOP_* from ``settings``, our sources first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGLOOP_")}
    for k, v in settings.items():
        env[f"SEGLOOP_{k.upper()}"] = json.dumps(v) if isinstance(v, list) else str(v)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(PLUGIN_DIR),
                                         env.get("PYTHONPATH", "")])
    return env


class Redis:
    """A redis-server on its own port; ``aof`` makes it persist its data across restarts."""

    def __init__(self, folder: Path, aof: bool = False) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed")
        self.exe, self.folder, self.aof = exe, folder, aof
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else [
            "--appendonly", "no"]
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--dir", str(self.folder), *aof],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis(port=self.port)
        try:
            for _ in range(200):
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    time.sleep(0.05)
            raise RuntimeError("redis-server did not start")
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: whatever was not persisted is lost."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        self.kill()


class Proc:
    """A `segloop` CLI child process with its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._fh = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-c", CLI, *args], env=env,
                                     stdout=self._fh, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._fh.close()


class Server(Proc):
    """`segloop serve` on a free loopback port."""

    def __init__(self, settings: dict[str, Any], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(["serve", "--port", str(self.port), "--host", "127.0.0.1"],
                         child_env(settings), log)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Return once /health answers; RuntimeError with the server's log when it exits or times out."""
        try:
            wait_for_health(self.url, self.proc, seconds=timeout)
        except AssertionError as exc:
            raise RuntimeError(f"segloop serve: {exc}:\n{self.output()}") from None

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60.0)


class Worker(Proc):
    """`segloop worker` (threads pool, concurrency 1)."""

    def __init__(self, settings: dict[str, Any], log: Path) -> None:
        super().__init__(["worker", "--concurrency", "1"], child_env(settings), log)


def tiny_volume(seed: int = 0, depth: int = 8) -> bytes:
    """A 24x20x``depth`` int16 NIfTI (gzip) with a bright block on slices 2..depth-3: small
    enough for dozens of jobs; a deep one makes a propagation of slow-classic last a while
    (0.07 s per slice)."""
    rng = np.random.default_rng(seed)
    arr = rng.normal(0, 5, (24, 20, depth)).astype(np.int16)
    arr[6:16, 5:14, 2:depth - 2] += 200
    img = nib.Nifti1Image(arr, np.diag([1.5, 1.5, 3.0, 1.0]))
    buf = io.BytesIO()
    buf.write(img.to_bytes())
    import gzip

    return gzip.compress(buf.getvalue(), compresslevel=1)


def tiny_mask() -> bytes:
    """A label map on :func:`tiny_volume`'s grid (label 1 on the block)."""
    lab = np.zeros((24, 20, 8), np.uint8)
    lab[6:16, 5:14, 2:6] = 1  # the block of tiny_volume(depth=8)
    return nib.Nifti1Image(lab, np.diag([1.5, 1.5, 3.0, 1.0])).to_bytes()


def events_until_end(c: httpx.Client, job_id: str, task_id: str, timeout: float = 120.0,
                     on_event: Any = None) -> list[dict[str, Any]]:
    """The task's SSE events until it ends (or ``timeout`` passes)."""
    out: list[dict[str, Any]] = []
    with c.stream("GET", f"/api/v1/jobs/{job_id}/events", params={"task_id": task_id},
                  timeout=httpx.Timeout(timeout, read=timeout)) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: "):
                ev = json.loads(line[6:])
                out.append(ev)
                if on_event is not None:
                    on_event(ev)
    return out


def wait_task_end(c: httpx.Client, job_id: str, task_id: str, timeout: float = 120.0
                  ) -> dict[str, Any]:
    """Poll a task until it is finished; returns its record."""
    deadline = time.monotonic() + timeout
    t: dict[str, Any] = {}
    while time.monotonic() < deadline:
        t = c.get(f"/api/v1/jobs/{job_id}/tasks/{task_id}").json()
        if t["state"] in ("succeeded", "failed", "cancelled"):
            return t
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} did not end in {timeout} s: {t}")


