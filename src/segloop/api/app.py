"""The FastAPI application: ``create_app(settings)`` builds it from the modules beside it.

Layout: ``deps`` (services, auth), ``schemas`` (request/response models), ``routes_jobs`` and
``routes_system`` (thin routes), ``sse`` (event streams), ``middleware`` (metrics, request log).

Concurrency model: request handlers run on the event loop and hand anything slow (reading a
volume, writing a mask file) to Starlette's thread pool; an upload is read in a child process
(segloop.jobs.ingest), so it neither holds this process's GIL nor its memory; engine work
never runs in a handler, it is recorded as a task and given to the queue (embedded worker
threads in this process, or Celery workers elsewhere). Progress comes back through the event
bus and is pushed to clients as Server-Sent Events. This process never imports torch: engines
are imported only by the task runner, inside a task (in embedded mode, a worker thread of this
process; a torch-based engine then loads in that thread, once per process). Must not import
engines, torch, the worker or the web UI.

Cost per request: dependencies that do not block are ``async`` (no thread hop), the metrics
and request log are a plain ASGI middleware (no extra task or stream copy per response), and
an event stream reads the task from the store once, after subscribing (so nothing published
in between is missed).

Auth: with ``settings.auth_required`` every route but ``/health`` (``/metrics`` too) needs a key
(``X-API-Key`` header, ``Authorization: Bearer``, or ``?api_key=`` for EventSource / viewer
downloads). Without it (loopback), callers are the local admin unless they send a key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from segloop import __version__
from segloop.config import Settings
from segloop.errors import SegloopError
from segloop.jobs.housekeeping import sweep_leftovers

from .deps import Services, Svc, Who
from .limits import BodyTooLarge, JsonBodyLimit, body_too_large_response
from .middleware import Observe
from .routes_drafts import drafts_router
from .routes_edit import edit_router
from .routes_jobs import jobs_router
from .routes_system import system_router
from .schemas import HealthOut

# Services, Svc and Who live in .deps; re-exported for the protocol adapters
__all__ = ["Services", "Svc", "Who", "create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    """The segloop API for ``settings`` (default: from the environment). Starts its queue on
    startup (lifespan) and stops it on shutdown."""
    if settings is None:
        from segloop.config import load_settings

        settings = load_settings()
    svc = Services(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(sweep_leftovers, settings)  # crash leftovers past their grace
        svc.queue.start()
        svc.ingest.warm()  # the upload reader process starts now, not on the first upload
        try:
            yield
        finally:
            svc.close()

    app = FastAPI(title="segloop", version=__version__, lifespan=lifespan,
                  description="Human-in-the-loop 3D segmentation: upload, prompt, propagate, "
                              "correct, review, export.")
    app.state.services = svc
    app.state.settings = settings
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["*"], allow_headers=["*"],
                           expose_headers=["X-Mask-Version"])

    @app.exception_handler(SegloopError)
    async def segloop_error(request: Request, exc: SegloopError) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "error": type(exc).__name__},
                            status_code=exc.http_status)

    app.add_middleware(JsonBodyLimit, max_bytes=settings.max_json_bytes)
    app.add_exception_handler(BodyTooLarge, body_too_large_response)
    app.add_middleware(Observe, metrics=svc.metrics)

    @app.get("/health", tags=["system"], response_model=HealthOut)
    async def health() -> dict[str, Any]:  # on the event loop: never queued behind uploads
        return {"status": "ok", "version": __version__, "queue": settings.queue}

    @app.get("/metrics", tags=["system"], include_in_schema=False)
    def metrics(who: Who) -> Response:  # any role's key when keys are required (Prometheus:
        # `authorization: {credentials_file: ...}` with a dedicated user's key)
        svc.metrics.set_queue(svc.store.queue_depth())
        svc.metrics.set_tasks(svc.store.task_counts())
        body, ctype = svc.metrics.render()
        return Response(body, media_type=ctype)

    app.include_router(jobs_router())
    app.include_router(edit_router())
    app.include_router(drafts_router())
    app.include_router(system_router())
    return app
