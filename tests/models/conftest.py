"""Fixtures for the model tests: a tiny original-format checkpoint and a local file server."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class FileServer:
    """A local HTTP server on 127.0.0.1 serving byte blobs by path, with Range support.

    ``drop_first``: paths whose first GET sends only half the body and closes the connection.
    ``corrupt``: paths served with one byte flipped. ``no_range``: ignore Range (always 200).
    ``requests`` records (path, Range header) of every GET.
    """

    files: dict[str, bytes] = field(default_factory=dict)
    drop_first: set[str] = field(default_factory=set)
    corrupt: set[str] = field(default_factory=set)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _handler(server: FileServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            server.requests.append((self.path, rng))
            body = server.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            if self.path in server.corrupt:
                body = body[:10] + bytes([body[10] ^ 0xFF]) + body[11:]
            start = 0
            if rng and rng.startswith("bytes="):
                start = int(rng[6:].split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            chunk = body[start:]
            self.send_header("Content-Length", str(len(chunk)))
            self.end_headers()
            if self.path in server.drop_first:
                server.drop_first.discard(self.path)
                self.wfile.write(chunk[: len(chunk) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(chunk)

    return Handler


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    fs = FileServer()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(fs))
    fs.port = httpd.server_address[1]
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield fs
    finally:
        httpd.shutdown()
        httpd.server_close()


@dataclass(frozen=True)
class TinyCheckpoint:
    path: Path
    data: bytes
    sha256: str
    config: dict


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> TinyCheckpoint:
    """A tiny random-weight model saved in the original format ``{"model": state_dict}``."""
    import torch

    from segloop.models.configs import tiny_config
    from segloop.models.loader import build_model, save_original_checkpoint

    torch.manual_seed(0)
    cfg = tiny_config(64)
    path = save_original_checkpoint(build_model(cfg), tmp_path_factory.mktemp("ckpt") / "tiny.pt")
    data = path.read_bytes()
    return TinyCheckpoint(path=path, data=data, sha256=hashlib.sha256(data).hexdigest(), config=cfg)
