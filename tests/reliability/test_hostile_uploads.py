"""Hostile uploads cost the server little and never stall it (issue 9 item 3): limits in
decoded bytes checked before inflating, streamed inflation with a running limit, DICOM parsed
only when it looks like DICOM, a cap on zip members, and ``/health`` answering while each
upload is processed. Drives a real ``segloop serve``; figures: benchmarks/hostile_uploads.py."""

from __future__ import annotations

import gzip
import io
import statistics
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator

import httpx
import nibabel as nib
import numpy as np
import pytest

from security.live import Server, nifti_bytes


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("hostile") / "home",
                {"SEGLOOP_MAX_ZIP_ENTRIES": "5000"}) as s:
        yield s


def _gzip_zeros(n: int) -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    return b"".join(comp.compress(block) for _ in range(n >> 20)) + comp.flush()


def _header_bomb() -> bytes:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((1024, 1024, 1000))
    hdr.set_data_dtype(np.int16)
    return bytes(hdr.binaryblock) + b"\0" * 4


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    return buf.getvalue()


def _while_polling(server: Server, call: Callable[[], httpx.Response]
                   ) -> tuple[httpx.Response, float, list[float], float]:
    """(response, seconds, /health latencies in ms, peak RSS growth in MiB) of ``call``."""
    lat: list[float] = []
    start = peak = server.rss_mb()
    stop = threading.Event()

    def poll() -> None:
        nonlocal peak
        with httpx.Client(base_url=server.url, timeout=30) as h:
            while not stop.is_set():
                t = time.perf_counter()
                assert h.get("/health").status_code == 200
                lat.append((time.perf_counter() - t) * 1e3)
                peak = max(peak, server.rss_mb())
                time.sleep(0.01)

    th = threading.Thread(target=poll)
    th.start()
    while not lat:
        time.sleep(0.01)
    t0 = time.perf_counter()
    r = call()
    dt = time.perf_counter() - t0
    n = len(lat)
    while len(lat) <= n:  # one more answer after the request: nothing left queued
        time.sleep(0.01)
    stop.set()
    th.join()
    return r, dt, lat, peak - start


def test_hostile_uploads_are_cheap_and_health_answers(server: Server) -> None:
    jid = server.upload(nifti_bytes(np.zeros((64, 64, 32), np.int16)), "v.nii").json()["job_id"]
    mask_bomb = _gzip_zeros(256 << 20)
    zeros = gzip.compress(nifti_bytes(np.zeros((200, 200, 200), np.uint8)), compresslevel=1)
    dcm_zip = _zip({"a.dcm": bytes(16 << 20)})
    many = _zip({f"{i}.dcm": b"" for i in range(6000)})
    cases: list[tuple[str, Callable[[], httpx.Response], int, float, float]] = [
        # name, request, expected status, max seconds, max RSS growth MiB
        ("header bomb", lambda: server.upload(_header_bomb(), "b.nii"), 413, 5, 100),
        ("gzip mask bomb", lambda: server.client.put(f"/api/v1/jobs/{jid}/mask",
                                                     content=mask_bomb), 413, 5, 100),
        ("zeros named .dcm", lambda: server.upload(dcm_zip, "s.zip"), 422, 10, 100),
        ("6000 zip members", lambda: server.upload(many, "s.zip"), 422, 15, 100),
        ("200^3 zeros (legit)", lambda: server.upload(zeros, "z.nii.gz"), 201, 60, 400),
    ]
    report = []
    for name, call, status, max_s, max_mb in cases:
        r, dt, lat, grew = _while_polling(server, call)
        report.append(f"{name}: {r.status_code} in {dt:.2f} s, /health max "
                      f"{max(lat):.0f} ms median {statistics.median(lat):.0f} ms, "
                      f"RSS +{grew:.0f} MiB")
        assert r.status_code == status, (name, r.text)
        assert dt < max_s, report
        assert grew < max_mb, report
        assert lat and max(lat) < 1000 and statistics.median(lat) < 100, report
    print("\n".join(report))
    assert server.leftovers() == []
