"""Hostile uploads against a real `segloop serve`: status, time, /health latency, server RSS.

Run from the checkout (the server runs this checkout's ``src``):

    PYTHONPATH=src python benchmarks/hostile_uploads.py [--scale 1.0]

For each request it prints the answer, how long it took, the slowest and median /health
answer while it ran (polled every 10 ms from another thread) and the server's peak resident
memory growth. ``--scale`` shrinks the bombs (0.25: a quarter of the sizes) on a busy machine.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np

RUN = ("import argparse, sys; from segloop.cli import serve; p = argparse.ArgumentParser(); "
       "s = p.add_subparsers(); serve.register(s); a = p.parse_args(sys.argv[1:]); "
       "sys.exit(a.func(a))")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _gzip_zeros(n: int) -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = io.BytesIO()
    block = bytes(1 << 20)
    for _ in range(n >> 20):
        out.write(comp.compress(block))
    out.write(comp.flush())
    return out.getvalue()


def _nifti_header_bomb() -> bytes:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((1024, 1024, 1000))
    hdr.set_data_dtype(np.int16)
    return hdr.binaryblock + b"\0" * 4


def _zeros_nifti_gz(side: int) -> bytes:
    img = nib.Nifti1Image(np.zeros((side, side, side), np.uint8), np.eye(4))
    return gzip.compress(img.to_bytes(), compresslevel=1)


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args()
    sc = args.scale
    home = Path(tempfile.mkdtemp(prefix="segloop-hostile-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SEGLOOP_HOME": str(home), "SEGLOOP_DEFAULT_ENGINE": "classic",
           "SEGLOOP_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-c", RUN, "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    c = httpx.Client(base_url=base, timeout=600)
    for _ in range(300):
        try:
            c.get("/health", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    vol = np.zeros((64, 64, 32), np.int16)
    jid = c.post("/api/v1/jobs", files={"file": ("v.nii", nib.Nifti1Image(
        vol, np.eye(4)).to_bytes())}).json()["job_id"]
    mask_bomb = _gzip_zeros(int(1024**3 * sc))
    points = int(2_000_000 * sc)
    side = int(512 * sc ** (1 / 3))
    header_bomb, zeros = _nifti_header_bomb(), _zeros_nifti_gz(side)
    dcm_zip = _zip({"a.dcm": bytes(int(64 * sc) << 20)})
    many = _zip({f"{i}.dcm": b"" for i in range(int(50_000 * sc))})
    body = {"slice_index": 3, "points": [[1, 1]] * points, "point_labels": [1] * points}
    cases: list[tuple[str, Callable[[], httpx.Response]]] = [
        ("NIfTI header 1024x1024x1000 int16 (352 B)",
         lambda: c.post("/api/v1/jobs", files={"file": ("b.nii", header_bomb)})),
        (f"NIfTI.gz of {side}^3 zeros uint8 ({len(zeros) >> 10} KiB)",
         lambda: c.post("/api/v1/jobs", files={"file": ("z.nii.gz", zeros)})),
        (f"PUT /mask gzip {len(mask_bomb) >> 10} KiB -> {int(1024 * sc)} MiB",
         lambda: c.put(f"/api/v1/jobs/{jid}/mask", content=mask_bomb)),
        (f"zip of {int(64 * sc)} MiB zeros named .dcm",
         lambda: c.post("/api/v1/jobs", files={"file": ("s.zip", dcm_zip)})),
        (f"zip of {int(50_000 * sc)} empty entries",
         lambda: c.post("/api/v1/jobs", files={"file": ("s.zip", many)})),
        (f"JSON with {points} points",
         lambda: c.post(f"/api/v1/jobs/{jid}/initial-mask", json=body)),
    ]
    print(f"{'request':48s} {'status':>6s} {'time s':>7s} {'health max ms':>13s} "
          f"{'median ms':>9s} {'RSS +MB':>8s}")
    for name, call in cases:
        lat: list[float] = []
        peak = [_rss_mb(proc.pid)]
        start_rss = peak[0]
        stop = threading.Event()

        def poll(lat: list[float] = lat, peak: list[float] = peak,
                 stop: threading.Event = stop) -> None:
            with httpx.Client(base_url=base, timeout=60) as h:
                while not stop.is_set():
                    t = time.perf_counter()
                    h.get("/health")
                    lat.append((time.perf_counter() - t) * 1e3)
                    peak[0] = max(peak[0], _rss_mb(proc.pid))
                    time.sleep(0.01)

        th = threading.Thread(target=poll)
        th.start()
        t0 = time.perf_counter()
        r = call()
        dt = time.perf_counter() - t0
        stop.set()
        th.join()
        worst = f"{max(lat):13.1f}" if lat else f"{'-':>13s}"
        med = f"{statistics.median(lat):9.1f}" if lat else f"{'-':>9s}"
        print(f"{name:48s} {r.status_code:6d} {dt:7.2f} {worst} {med} "
              f"{peak[0] - start_rss:8.0f}")
    proc.terminate()
    proc.wait(20)


if __name__ == "__main__":
    main()
