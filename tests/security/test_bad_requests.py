"""Malformed requests get a 4xx JSON answer, never a 500 traceback (issue 9 item 6): broken
zips, a multipart label on a body with no parts, integers over 2**63, ragged point lists, and
oversized JSON bodies and prompts (item 3). Each test drives a real ``segloop serve``."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from .live import Server, nifti_bytes

HUGE = 2**64 + 5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("badreq")
    with Server(root / "home", {"SEGLOOP_MAX_POINTS": "50",
                                "SEGLOOP_MAX_JSON_BYTES": "65536"}) as s:
        yield s


@pytest.fixture(scope="module")
def job(server: Server) -> str:
    vol = np.zeros((24, 24, 8), np.int16)
    vol[6:18, 6:18, 2:6] = 200
    r = server.upload(nifti_bytes(vol), "v.nii")
    assert r.status_code == 201, r.text
    return str(r.json()["job_id"])


def _json_4xx(r: object) -> dict[str, object]:
    import httpx

    assert isinstance(r, httpx.Response)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    body = r.json()
    assert isinstance(body, dict) and body.get("detail"), body
    assert "Traceback" not in r.text
    return body


def _zip_one(data: bytes, name: str = "s/0001.dcm") -> bytearray:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, data)
    return bytearray(buf.getvalue())


def _local_data_offset(z: bytearray) -> int:
    name_len = int.from_bytes(z[26:28], "little")
    extra_len = int.from_bytes(z[28:30], "little")
    return 30 + name_len + extra_len


def broken_zips() -> dict[str, bytes]:
    payload = bytes(range(256)) * 64
    bad_crc = _zip_one(payload)
    bad_crc[14] ^= 0xFF  # local header CRC
    cd = bad_crc.rfind(b"PK\x01\x02")
    bad_crc[cd + 16] ^= 0xFF  # central directory CRC
    corrupt = _zip_one(payload)
    off = _local_data_offset(corrupt)
    corrupt[off:off + 40] = b"\xff" * 40  # deflate stream garbage
    encrypted = _zip_one(payload)
    encrypted[6] |= 0x01
    encrypted[encrypted.rfind(b"PK\x01\x02") + 8] |= 0x01  # general purpose flag: encrypted
    method = _zip_one(payload)
    method[8:10] = (99).to_bytes(2, "little")
    method[method.rfind(b"PK\x01\x02") + 10:method.rfind(b"PK\x01\x02") + 12] = \
        (99).to_bytes(2, "little")
    truncated = bytes(_zip_one(payload))[:200]
    return {"bad-crc": bytes(bad_crc), "corrupt-deflate": bytes(corrupt),
            "encrypted": bytes(encrypted), "unknown-method": bytes(method),
            "truncated": truncated}


@pytest.mark.parametrize("kind", sorted(broken_zips()))
def test_broken_zip_is_4xx(server: Server, kind: str) -> None:
    body = _json_4xx(server.upload(broken_zips()[kind], "series.zip"))
    assert "zip" in str(body["detail"]).lower()
    assert server.leftovers() == []


def test_multipart_label_without_parts(server: Server) -> None:
    for body in (b"just some bytes, no parts", b"", b"--b\r\n", b"--b--\r\n"):
        r = server.client.post("/api/v1/jobs", content=body,
                               headers={"content-type": "multipart/form-data; boundary=b"})
        _json_4xx(r)
    r = server.client.post("/api/v1/jobs", content=b"abc",
                           headers={"content-type": "multipart/form-data"})
    _json_4xx(r)


def test_huge_integers_are_422(server: Server, job: str) -> None:
    base = f"/api/v1/jobs/{job}"
    c = server.client
    cases = [
        ("post", f"{base}/initial-mask", {"slice_index": HUGE, "box": [1, 1, 5, 5]}),
        ("post", f"{base}/initial-mask", {"slice_index": 3, "box": [1, 1, HUGE, 5]}),
        ("post", f"{base}/initial-mask", {"slice_index": 3, "points": [[HUGE, 2]],
                                          "point_labels": [1]}),
        ("post", f"{base}/initial-mask", {"slice_index": 3, "points": [[2, 2]],
                                          "point_labels": [HUGE]}),
        ("post", f"{base}/initial-mask", {"slice_index": 3, "box": [1, 1, 5, 5],
                                          "object_id": HUGE}),
        ("post", f"{base}/initial-mask", {"slice_index": -HUGE, "box": [1, 1, 5, 5]}),
        ("post", f"{base}/refine", {"slice_index": 3, "points": [[2, -HUGE]],
                                    "point_labels": [0]}),
        ("post", f"{base}/propagate", {"object_id": HUGE}),
        ("post", f"{base}/propagate", {"slice_index": HUGE}),
        ("post", f"{base}/review", {"version": HUGE}),
        ("post", f"{base}/objects", {"name": "x", "label_value": HUGE}),
        ("patch", f"{base}/objects/{HUGE}", {"name": "x"}),
        ("patch", f"{base}/objects/1", {"label_value": -HUGE}),
    ]
    for method, path, body in cases:
        _json_4xx(getattr(c, method)(path, json=body))
    for params in ({"version": HUGE}, {"format": "png", "slice_index": HUGE},
                   {"version": -HUGE}):
        _json_4xx(c.get(f"{base}/result", params=params))
    _json_4xx(c.get("/api/v1/system/audit", params={"limit": -HUGE}))
    assert c.get(f"{base}/status").status_code == 200  # the job is unharmed


def test_ragged_points_are_422(server: Server, job: str) -> None:
    url = f"/api/v1/jobs/{job}/initial-mask"
    for points, labels in (([[1, 2], [3]], [1, 1]), ([[1, 2, 3]], [1]), ([[1, 2]], [1, 0]),
                           ([[1, 2], [3, 4]], [1]), ([1, 2], [1])):
        _json_4xx(server.client.post(url, json={"slice_index": 3, "points": points,
                                                "point_labels": labels}))


def test_point_count_and_json_size_capped(server: Server, job: str) -> None:
    url = f"/api/v1/jobs/{job}/initial-mask"
    pts = [[i % 20, i % 19] for i in range(51)]
    body = _json_4xx(server.client.post(url, json={"slice_index": 3, "points": pts,
                                                   "point_labels": [1] * 51}))
    assert "50" in str(body["detail"])
    big = {"slice_index": 3, "points": [[1, 1]] * 20_000, "point_labels": [1] * 20_000}
    r = server.client.post(url, json=big)
    assert r.status_code == 413, r.text
    # chunked (no Content-Length): counted as it arrives

    def gen() -> Iterator[bytes]:
        yield b'{"slice_index": 3, "points": ['
        for _ in range(20_000):
            yield b"[1, 1],"
        yield b"[1, 1]]}"

    r = server.client.post(url, content=gen(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert len(server.client.get(f"/api/v1/jobs/{job}/status").content) < 100_000


def test_bad_zip_names_never_reach_disk(server: Server, tmp_path: Path) -> None:
    """Zip members with odd names are stored under generated names (the series still reads)."""
    r = server.upload(bytes(_zip_one(b"\0" * 10, name="../../evil.dcm")), "x.zip")
    _json_4xx(r)
    assert not (server.home.parent / "evil.dcm").exists()


def test_body_cap_whatever_the_content_type(server: Server, job: str) -> None:
    for ctype in ("text/plain", "application/octet-stream", "application/x-www-form-urlencoded"):
        r = server.client.post(f"/api/v1/jobs/{job}/initial-mask", content=b"x" * 200_000,
                               headers={"content-type": ctype})
        assert r.status_code == 413, (ctype, r.text)
    r = server.client.post("/api/v1/system/cleanup", content=b"{" * 200_000,
                           headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text


def test_a_route_that_reads_no_body_never_waits_for_one(server: Server, job: str) -> None:
    """A Content-Length with no body behind it (MONAI Label's client sends one on GETs after a
    POST: it reuses its header dict) must not hang a route that reads no body; a route that
    does read one still gets the cap."""
    import socket

    for path in (f"/api/v1/jobs/{job}/status", "/health"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n"
                         "Connection: close\r\n\r\n".encode())
            head = sock.recv(4096)  # socket.timeout (a failure) if the server waits for a body
        assert head.startswith(b"HTTP/1.1 200"), head[:200]


def test_zip_member_count_read_from_its_tail(server: Server) -> None:
    """70,000 empty members (a zip64 directory): refused from the end record, without parsing
    the directory (the time: benchmarks/hostile_uploads.py)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(70_000):
            zf.writestr(f"{i}.dcm", b"")
    r = server.upload(buf.getvalue(), "many.zip")
    body = _json_4xx(r)
    assert "70000 members" in str(body["detail"])
