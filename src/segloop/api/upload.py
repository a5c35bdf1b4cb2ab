"""Stream an upload to disk with the size limit enforced while bytes arrive.

Accepts ``multipart/form-data`` (the first file part; field name ``file`` preferred) or a raw
body (any other content type). A ``Content-Length`` above the limit is refused before a byte
is read; a body that grows past it is cut off and its partial file deleted. The file lands
under ``<home>/tmp`` with a generated name: the client's file name is kept only as a label.
Imports Starlette and python-multipart; never torch.
Must not import segloop.cli, segloop.protocols, segloop.worker, segloop.web, segloop.ism,
segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from segloop.errors import InputError, SegloopError, VolumeTooLargeError

__all__ = ["read_small_body", "receive_upload"]

_SLACK = 64 * 1024  # multipart framing on top of the file itself


def _too_large(limit: int) -> VolumeTooLargeError:
    return VolumeTooLargeError(
        f"upload larger than the limit of {limit} bytes ({limit / 1024**2:.0f} MiB); "
        "ask the administrator to raise SEGLOOP_MAX_UPLOAD_BYTES"
    )


def _check_length(request: Request, limit: int) -> None:
    cl = request.headers.get("content-length")
    if cl is not None:
        try:
            n = int(cl)
        except ValueError:
            raise InputError("invalid Content-Length header") from None
        if n > limit + _SLACK:
            raise _too_large(limit)


class _PartWriter:
    """python-multipart callbacks writing the first file part to ``path``."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path, self.limit = path, limit
        self.fh: Any = None
        self.written = 0
        self.filename: str | None = None
        self.done = False
        self._hname = b""
        self._hval = b""
        self._headers: dict[bytes, bytes] = {}
        self._active = False

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.part_begin, "on_header_field": self.header_field,
            "on_header_value": self.header_value, "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished, "on_part_data": self.part_data,
            "on_part_end": self.part_end,
        }

    def part_begin(self) -> None:
        self._headers = {}
        self._hname = self._hval = b""

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._hname += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._hval += data[start:end]

    def header_end(self) -> None:
        self._headers[self._hname.lower()] = self._hval
        self._hname = self._hval = b""

    def headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        fname = params.get(b"filename")
        self._active = fname is not None and not self.done
        if self._active:
            self.filename = (fname or b"").decode("utf-8", "replace")
            self.fh = open(self.path, "wb")  # noqa: SIM115 - closed in part_end/close

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._active:
            return
        self.written += end - start
        if self.written > self.limit:
            raise _too_large(self.limit)
        self.fh.write(data[start:end])

    def part_end(self) -> None:
        if self._active:
            self.fh.close()
            self.fh = None
            self._active = False
            self.done = True

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


async def receive_upload(request: Request, tmp_dir: Path, limit: int) -> tuple[Path, str]:
    """Write the uploaded file to ``tmp_dir``; returns (path, the client's file name or "")."""
    _check_length(request, limit)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    path = tmp_dir / f"upload-{uuid.uuid4()}"
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    try:
        if ctype == b"multipart/form-data":
            boundary = params.get(b"boundary")
            if not boundary:
                raise InputError("multipart upload without a boundary")
            writer = _PartWriter(path, limit)
            parser = MultipartParser(boundary, writer.callbacks())  # type: ignore[arg-type]
            try:
                async for chunk in request.stream():
                    parser.write(chunk)
                parser.finalize()
            except SegloopError:
                raise
            except (MultipartParseError, ValueError) as exc:
                raise InputError(f"malformed multipart/form-data body ({exc}); send the volume "
                                 "as a file field 'file', or a raw body with another "
                                 "content type") from exc
            finally:
                writer.close()
            if not writer.done:
                raise InputError("the form has no file: send the volume as a file field 'file'")
            return path, writer.filename or ""
        written = 0
        with open(path, "wb") as fh:
            async for chunk in request.stream():
                written += len(chunk)
                if written > limit:
                    raise _too_large(limit)
                fh.write(chunk)
        if written == 0:
            raise InputError("empty upload: send the volume file in the request body")
        return path, request.query_params.get("filename", "")
    except BaseException:
        path.unlink(missing_ok=True)
        raise


async def read_small_body(request: Request, limit: int) -> bytes:
    """The request's file content (multipart file part or raw body) in memory, up to ``limit``."""
    _check_length(request, limit)
    ctype, _ = parse_options_header(request.headers.get("content-type", ""))
    if ctype == b"multipart/form-data":
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            p, _ = await receive_upload(request, Path(d), limit)
            data = await run_in_threadpool(p.read_bytes)  # up to `limit`: off the event loop
            os.unlink(p)
            return data
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise _too_large(limit)
    if not buf:
        raise InputError("empty body: send the mask file")
    return bytes(buf)
