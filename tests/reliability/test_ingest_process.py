"""Uploads are read in a child process (issue 9 item 3): when it dies mid-upload (as an
out-of-memory kill would do) the client gets a 413 with a message, the server and its jobs
carry on, and the next upload is read by a fresh child. Drives a real ``segloop serve``."""

from __future__ import annotations

import gzip
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import psutil
import pytest

from security.live import Server, nifti_bytes


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("ingest") / "home") as s:
        yield s


def test_killed_ingest_child_is_a_413_not_a_dead_server(server: Server) -> None:
    small = nifti_bytes(np.zeros((16, 16, 8), np.int16))
    first = server.upload(small, "a.nii")
    assert first.status_code == 201, first.text
    assert server.proc is not None
    api = psutil.Process(server.proc.pid)
    kids = [k for k in api.children(recursive=True) if "multiprocessing" in " ".join(k.cmdline())]
    assert kids, "no ingest child process"
    big = gzip.compress(nifti_bytes(np.zeros((448, 448, 448), np.uint8)), compresslevel=1)
    out: dict[str, httpx.Response] = {}
    t = threading.Thread(target=lambda: out.setdefault("r", server.upload(big, "big.nii.gz")))
    t.start()
    deadline = time.monotonic() + 30
    while not any(k.cpu_percent(0.05) > 20 for k in kids if k.is_running()):
        assert time.monotonic() < deadline, "the child never started reading"
    for k in kids:
        k.send_signal(signal.SIGKILL)
    t.join(60)
    r = out["r"]
    assert r.status_code == 413, r.text
    assert "ingest process" in r.json()["detail"]
    assert server.client.get("/health").status_code == 200
    again = server.upload(small, "b.nii")
    assert again.status_code == 201, again.text
    assert server.client.get(f"/api/v1/jobs/{first.json()['job_id']}").status_code == 200
    assert len(server.jobs()) == 2 and server.leftovers() == []
