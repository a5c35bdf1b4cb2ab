"""ASGI middleware of the API: request metrics and one log line per request.

A plain ASGI middleware (no extra task or stream copy per response). Must not import routes,
engines, torch, the worker or the web UI.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import Metrics

__all__ = ["Observe"]

log = logging.getLogger("segloop.api")


class Observe:
    """ASGI middleware: request metrics and a log line per request, taken when the response
    starts (an event stream counts until its headers, not for its whole life)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        done = False

        def record(status: int) -> None:
            dt = time.perf_counter() - t0
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.request(scope["method"], path, status, dt)
            log.info("request", extra={"method": scope["method"], "route": path,
                                       "status": status, "ms": round(dt * 1e3, 2)})

        async def send_observed(message: Message) -> None:
            nonlocal done
            if message["type"] == "http.response.start" and not done:
                done = True
                record(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        except BaseException:
            if not done:
                done = True
                record(500)
            raise
