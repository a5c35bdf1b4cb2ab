"""Request-size and number limits of the API: bounded integer types and a request body cap.

Every integer a client sends (slice indices, coordinates, point labels, object ids, label
values, versions) is bounded here, so a number over 2**63 or a negative index is a 422 with
the field named instead of an overflow deep in the job store. :class:`JsonBodyLimit` is an
ASGI middleware that refuses a request body over ``max_json_bytes`` with a 413 (Content-Length
first, then counting the bytes that actually arrive) on every route but the two upload routes
(``POST /api/v1/jobs``, ``PUT .../mask``: they stream to disk under their own limit), and
:func:`check_points` enforces the point-count setting. Imports pydantic and Starlette; never
the job store or an engine.
Must not import segloop.cli, segloop.protocols, segloop.worker, segloop.web, segloop.ism,
segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import Field
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from segloop.errors import PromptError

__all__ = ["MAX_INDEX", "BodyTooLarge", "Coord", "JsonBodyLimit", "LabelValue", "ObjectId",
           "Point", "PointLabel", "SeriesDescription", "Version", "body_too_large_response",
           "check_points"]

#: the largest index or version accepted (int32): far above any volume, far below 2**63
MAX_INDEX = 2**31 - 1

Coord = Annotated[int, Field(ge=0, le=MAX_INDEX)]
"""A voxel index (slice index, x or y): 0 .. 2**31-1; the engine checks it fits the volume."""
Point = Annotated[list[Coord], Field(min_length=2, max_length=2)]
"""One click ``[x, y]`` in voxels."""
PointLabel = Annotated[int, Field(ge=0, le=1)]
"""1 positive, 0 negative."""
ObjectId = Annotated[int, Field(ge=1, le=255)]
"""An object of a job (its label value defaults to the id; masks are uint8)."""
LabelValue = Annotated[int, Field(ge=1, le=255)]
"""The value an object has in exported label maps."""
Version = Annotated[int, Field(ge=0, le=MAX_INDEX)]
"""A mask version number."""
SeriesDescription = Annotated[str, Field(max_length=64)]
"""A DICOM SeriesDescription (VR LO: at most 64 characters)."""


def check_points(points: list[list[int]] | None, labels: list[int] | None,
                 max_points: int) -> None:
    """PromptError when there are more than ``max_points`` points, or labels do not pair up."""
    n = len(points or [])
    if n > max_points:
        raise PromptError(f"{n} points in one prompt, more than the limit of {max_points} "
                          "(SEGLOOP_MAX_POINTS)")
    if labels is not None and len(labels) != n:
        raise PromptError(f"got {n} point(s) but {len(labels)} label(s): give one label per point")


def _is_upload(scope: Scope) -> bool:
    path = str(scope.get("path", "")).rstrip("/")
    method = scope.get("method", "")
    return (method == "POST" and path == "/api/v1/jobs") or \
        (method == "PUT" and path.startswith("/api/v1/jobs/") and path.endswith("/mask"))


#: path prefixes with their own upload limits (``max_upload_bytes``, streamed to disk): the
#: MONAI Label and nnInteractive adapters receive whole images
_OWN_LIMIT_PREFIXES = ("/monailabel/", "/nninteractive/")


class BodyTooLarge(HTTPException):
    """Raised while a route reads a body past ``max_json_bytes`` (answered 413)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body larger than {max_bytes} bytes "
                              "(SEGLOOP_MAX_JSON_BYTES)")


async def body_too_large_response(request: Request, exc: Exception) -> JSONResponse:
    """The 413 answer, in the API's error format."""
    detail = exc.detail if isinstance(exc, HTTPException) else str(exc)
    return JSONResponse({"detail": detail, "error": "VolumeTooLargeError"}, status_code=413)


class JsonBodyLimit:
    """ASGI middleware: a request body larger than ``max_bytes`` gets a 413 JSON answer.

    A declared Content-Length over the cap is refused before the route runs; otherwise the bytes
    are counted as the route reads them (never read ahead: a route that reads no body never
    waits for one, whatever Content-Length a client sends), and reading past the cap raises
    :class:`BodyTooLarge`. The upload routes and the protocol adapters are left alone: they
    have their own streamed limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": f"request body larger than {self.max_bytes} bytes "
                                     "(SEGLOOP_MAX_JSON_BYTES)",
                           "error": "VolumeTooLargeError"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or _is_upload(scope)
                or str(scope.get("path", "")).startswith(_OWN_LIMIT_PREFIXES)):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._refuse(send)
                    return
        size = 0
        started = False

        async def counted() -> Message:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(send)
