"""Request-size and number limits of the API: bounded integer types and a request body cap.

Every integer a client sends (slice indices, coordinates, point labels, object ids, label
values, versions) is bounded here, so a number over 2**63 or a negative index is a 422 with
the field named instead of an overflow deep in the job store. :class:`JsonBodyLimit` is an
ASGI middleware that refuses a request body over ``max_json_bytes`` with a 413 (Content-Length
first, then counting the bytes that actually arrive) on every route but the two upload routes
(``POST /api/v1/jobs``, ``PUT .../mask``: they stream to disk under their own limit), and
:func:`check_points` enforces the point-count setting. Imports pydantic and Starlette; never
the job store or an engine.
"""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from segloop.errors import PromptError

__all__ = ["MAX_INDEX", "Coord", "JsonBodyLimit", "LabelValue", "ObjectId", "Point",
           "PointLabel", "Version", "check_points"]

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


class JsonBodyLimit:
    """ASGI middleware: a request body larger than ``max_bytes`` gets a 413 JSON answer.

    The upload routes are left alone: they have their own streamed limit."""

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
        if scope["type"] != "http" or _is_upload(scope):
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
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
