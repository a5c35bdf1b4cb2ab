"""The FastAPI application: ``create_app(settings)`` builds it; routes are thin wrappers.

Concurrency model: request handlers run on the event loop and hand anything slow (reading a
volume, writing a mask file) to Starlette's thread pool; an upload is read in a child process
(segloop.jobs.ingest), so it neither holds this process's GIL nor its memory; engine work
never runs in a handler, it is recorded as a task and given to the queue (embedded worker
threads in this process, or Celery workers elsewhere). Progress comes back through the event
bus and is pushed to clients as Server-Sent Events. This process never imports torch: engines
are imported only by the task runner, inside a task (in embedded mode, a worker thread of this
process; a torch-based engine then loads in that thread, once per process).

Cost per request: dependencies that do not block are ``async`` (no thread hop), the metrics
and request log are a plain ASGI middleware (no extra task or stream copy per response), and
an event stream reads the task from the store once, after subscribing (so nothing published
in between is missed).

Auth: with ``settings.auth_required`` every route but ``/health`` (``/metrics`` too) needs a key
(``X-API-Key`` header, ``Authorization: Bearer``, or ``?api_key=`` for EventSource / viewer
downloads). Without it (loopback), callers are the local admin unless they send a key.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from segloop import __version__
from segloop.config import Settings
from segloop.errors import InputError, SegloopError
from segloop.io.volume import Volume
from segloop.jobs import files
from segloop.jobs.errors import AuthError, ConflictError, QueueUnavailableError
from segloop.jobs.events import EventBus, make_bus
from segloop.jobs.housekeeping import sweep_leftovers
from segloop.jobs.ingest import IngestPool
from segloop.jobs.queue import CeleryQueue, EmbeddedQueue, TaskQueue
from segloop.jobs.recovery import discard_unsent
from segloop.jobs.runner import Runtime
from segloop.jobs.store import LOCAL_ADMIN, TERMINAL, JobStore, Principal, require_reviewer
from segloop.jobs.system import gpu_info, host_info

from .limits import (
    BodyTooLarge,
    Coord,
    JsonBodyLimit,
    LabelValue,
    ObjectId,
    Point,
    PointLabel,
    Version,
    body_too_large_response,
    check_points,
)
from .metrics import Metrics
from .upload import read_small_body, receive_upload

__all__ = ["Services", "create_app"]

log = logging.getLogger("segloop.api")


class Services:
    """Everything a request needs, built once per app by :func:`create_app`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = JobStore(settings)
        self.bus: EventBus = make_bus(settings.queue, settings.redis_url)
        self.runtime = Runtime(settings, self.store, self.bus,
                               worker=f"api-{uuid.uuid4().hex[:8]}")
        self.queue: TaskQueue = (CeleryQueue(settings, self.runtime) if settings.queue == "celery"
                                 else EmbeddedQueue(settings, self.runtime))
        self.metrics = Metrics()
        self.ingest = IngestPool(settings.ingest_processes)  # uploads are read in a child
        self.runtime.on_finish = self.metrics.task_finished
        self._sources: OrderedDict[str, Volume] = OrderedDict()
        self._sources_lock = threading.Lock()
        self._engines: list[str] | None = None

    def source_volume(self, job: dict[str, Any]) -> Volume:
        """The uploaded volume (source grid), cached for a few jobs (for result exports)."""
        jid = job["job_id"]
        with self._sources_lock:
            vol = self._sources.get(jid)
        if vol is None:
            vol = files.load_source(self.store.job_dir(jid), self.store.source_rel(jid),
                                    self.settings.max_voxels)
            with self._sources_lock:
                self._sources[jid] = vol
                while len(self._sources) > 4:
                    self._sources.popitem(last=False)
        return vol

    def engine_names(self, refresh: bool = False) -> list[str]:
        """Registered engine names (entry points are scanned once, again on a miss)."""
        from segloop.engines.registry import engine_names
        from segloop.models.naming import parse_model_version
        from segloop.models.versions import saved_run_specs

        if refresh or self._engines is None:
            names = engine_names()
            # fine-tuned runs (segloop train) are engines too: ENGINE@RUN
            runs = sorted(sp.name for sp in saved_run_specs()
                          if (v := parse_model_version(sp.name)) is not None and v.engine in names)
            self._engines = names + runs
        return self._engines

    def default_engine(self) -> str:
        """The engine used when a request names none (switchable by model reload)."""
        return self.store.get_kv("default_engine", self.settings.default_engine)

    def close(self) -> None:
        self.ingest.close()
        self.queue.close()
        self.bus.close()
        self.store.close()


# ---------------------------------------------------------------------------- dependencies
async def get_services(request: Request) -> Services:
    """The app's services."""
    svc: Services = request.app.state.services
    return svc


Svc = Annotated[Services, Depends(get_services)]


async def get_principal(request: Request, svc: Svc) -> Principal:
    """The caller, from the API key; AuthError when a key is needed and missing or wrong.

    The key is checked against the store on every request (a removed user is refused at once)."""
    key = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if key is None and auth.lower().startswith("bearer "):
        key = auth[7:].strip()
    if key is None:
        key = request.query_params.get("api_key")
    if key:
        who = await run_in_threadpool(svc.store.authenticate, key)
        if who is None:
            raise AuthError("invalid API key")
        return who
    if svc.settings.auth_required:
        raise AuthError("this server needs an API key: send it as the X-API-Key header "
                        "(create one with `segloop users add NAME --role annotator`)")
    return LOCAL_ADMIN


Who = Annotated[Principal, Depends(get_principal)]


# ---------------------------------------------------------------------------- request bodies
class InitialMaskRequest(BaseModel):
    """A 2D prompt on axial slice ``slice_index`` (canonical voxel indices, inclusive box)."""

    model_config = ConfigDict(strict=True)  # "5" is not an int, 1.0 not a bool

    slice_index: Coord
    box: list[Coord] | None = Field(None, min_length=4, max_length=4,
                                    description="[x0, y0, x1, y1] inclusive")
    points: list[Point] | None = Field(None, description="[[x, y], ...]")
    point_labels: list[PointLabel] | None = Field(None, description="1 positive, 0 negative")
    object_id: ObjectId | None = None
    engine: str | None = None


class RefineRequest(InitialMaskRequest):
    """A correction on ``slice_index``, re-propagated from there."""


class PropagateRequest(BaseModel):
    """Propagate an object from its anchor slice (default: where its initial mask was drawn)."""

    model_config = ConfigDict(strict=True)  # "5" is not an int, 1.0 not a bool

    object_id: ObjectId | None = None
    slice_index: Coord | None = None
    engine: str | None = None


class ObjectRequest(BaseModel):
    """Object metadata."""

    model_config = ConfigDict(strict=True)  # "5" is not an int, 1.0 not a bool

    name: str | None = None
    colour: str | None = Field(None, pattern=r"^#[0-9a-fA-F]{6}([0-9a-fA-F]{2})?$")
    label_value: LabelValue | None = None


class ReviewRequest(BaseModel):
    """Which version to mark final (default: the current one)."""

    model_config = ConfigDict(strict=True)  # "5" is not an int, 1.0 not a bool

    version: Version | None = None


class CleanupRequest(BaseModel):
    """Retention run parameters."""

    model_config = ConfigDict(strict=True)  # "5" is not an int, 1.0 not a bool

    older_than_days: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    include_reviewed: bool = False


class ReloadRequest(BaseModel):
    """Switch the default engine (optional) and make every worker reload its models."""

    model_config = ConfigDict(strict=True)  # "5" is not an int, 1.0 not a bool

    engine: str | None = None


# ---------------------------------------------------------------------------- routes
def _submit(svc: Svc, who: Principal, job_id: str, kind: str, params: dict[str, Any]
            ) -> dict[str, Any]:
    check_points(params.get("points"), params.get("point_labels"), svc.settings.max_points)
    params = {**params, "engine": params.get("engine") or svc.default_engine()}
    known = svc.engine_names()
    if params["engine"] not in known:
        known = svc.engine_names(refresh=True)
    t = svc.store.create_task(job_id, kind, params, who, known)
    try:
        svc.queue.submit(t["task_id"])
    except QueueUnavailableError:  # 503, and the store forgets the task: nothing waits on it
        discard_unsent(svc.store, t["task_id"])
        raise
    svc.bus.publish(job_id, {**t, "type": "queued"})
    svc.metrics.tasks_submitted.labels(kind=kind).inc()
    return {"task_id": t["task_id"], "job_id": job_id, "kind": kind, "state": t["state"],
            "events": f"/api/v1/jobs/{job_id}/events?task_id={t['task_id']}"}


def _jobs_router() -> APIRouter:
    r = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])

    @r.post("", status_code=201, summary="Upload a volume (multipart file field 'file')")
    async def upload(request: Request, svc: Svc, who: Who) -> dict[str, Any]:
        path, filename = await receive_upload(request, svc.settings.tmp_dir,
                                              svc.settings.max_upload_bytes)
        job = await run_in_threadpool(svc.store.create_job, path, filename, who, svc.ingest)
        return {**job, "job_id": job["job_id"]}

    @r.get("", summary="The caller's jobs")
    def list_jobs(svc: Svc, who: Who, all_users: bool = False) -> list[dict[str, Any]]:
        return svc.store.list_jobs(who, all_users)

    @r.get("/{job_id}")
    def get_job(job_id: str, svc: Svc, who: Who) -> dict[str, Any]:
        return svc.store.get_job(job_id, who)

    @r.delete("/{job_id}", status_code=204)
    def delete_job(job_id: str, svc: Svc, who: Who) -> Response:
        svc.store.delete_job(job_id, who)
        return Response(status_code=204)

    @r.get("/{job_id}/volume", summary="The closest-canonical RAS volume (NIfTI)")
    def volume(job_id: str, svc: Svc, who: Who) -> FileResponse:
        svc.store.get_job(job_id, who)
        svc.store.audit(who.name, "download-volume", job_id)
        return FileResponse(files.canonical_path(svc.store.job_dir(job_id)),
                            media_type="application/gzip", filename=f"{job_id}.nii.gz")

    @r.post("/{job_id}/initial-mask", status_code=202)
    def initial_mask(job_id: str, body: InitialMaskRequest, svc: Svc, who: Who
                     ) -> dict[str, Any]:
        return _submit(svc, who, job_id, "initial-mask", body.model_dump())

    @r.post("/{job_id}/propagate", status_code=202)
    def propagate(job_id: str, svc: Svc, who: Who, body: PropagateRequest | None = None
                  ) -> dict[str, Any]:
        return _submit(svc, who, job_id, "propagate", (body or PropagateRequest()).model_dump())

    @r.post("/{job_id}/refine", status_code=202)
    def refine(job_id: str, body: RefineRequest, svc: Svc, who: Who) -> dict[str, Any]:
        return _submit(svc, who, job_id, "refine", body.model_dump())

    @r.post("/{job_id}/cancel")
    def cancel(job_id: str, svc: Svc, who: Who, task_id: str | None = None) -> dict[str, Any]:
        return {"cancel_requested": svc.store.cancel_task(job_id, who, task_id)}

    @r.get("/{job_id}/status")
    def status(job_id: str, svc: Svc, who: Who) -> dict[str, Any]:
        return svc.store.job_status(job_id, who)

    @r.get("/{job_id}/tasks/{task_id}")
    def task(job_id: str, task_id: str, svc: Svc, who: Who) -> dict[str, Any]:
        return svc.store.task_for(job_id, task_id, who)

    @r.get("/{job_id}/events", summary="Server-Sent Events: progress and completion")
    async def events(job_id: str, request: Request, svc: Svc, who: Who,
                     task_id: str | None = None) -> StreamingResponse:
        """Pushes ``status`` first, then every event of the job. With ``task_id`` the stream
        ends after that task's terminal event (done / failed / cancelled)."""
        sub = await svc.bus.subscribe(job_id)  # before reading the state: nothing slips through
        try:
            if task_id is None:
                first = await run_in_threadpool(svc.store.job_status, job_id, who)
            else:
                first = await run_in_threadpool(svc.store.task_for, job_id, task_id, who)
        except BaseException:
            await sub.close()
            raise
        return StreamingResponse(_event_stream(svc, sub, job_id, who, task_id, request, first),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @r.get("/{job_id}/result", summary="The mask: nii.gz (uploaded grid), png (a slice), dicom-seg")
    async def result(job_id: str, svc: Svc, who: Who,
                     format: Literal["nii.gz", "png", "dicom-seg"] = "nii.gz",
                     slice_index: Coord | None = None, version: Version | None = None,
                     style: Literal["colour", "labels"] = "colour",
                     grid: Literal["source", "canonical"] = "source") -> Response:
        job = await run_in_threadpool(svc.store.get_job, job_id, who)
        labels, n = await run_in_threadpool(svc.store.labels, job_id, who, version)
        await run_in_threadpool(svc.store.audit, who.name, "download-result", job_id,
                                format=format, version=n, grid=grid, slice_index=slice_index)
        if format == "nii.gz" and grid == "canonical":  # the viewer's grid (GET .../volume)
            def canonical_nifti() -> bytes:
                import gzip

                import nibabel as nib

                can: Any = nib.load(str(files.canonical_path(svc.store.job_dir(job_id))))
                img = nib.Nifti1Image(labels, can.affine)
                return gzip.compress(img.to_bytes(), compresslevel=1)

            body = await run_in_threadpool(canonical_nifti)
            return Response(body, media_type="application/gzip",
                            headers={"X-Mask-Version": str(n)})
        if format == "png":
            from .render import slice_png

            if slice_index is None:
                raise InputError("format=png needs slice_index")
            objs = svc.store.list_objects(job_id, who)
            data = slice_png(labels, slice_index, objs, style)
            return Response(data, media_type="image/png", headers={"X-Mask-Version": str(n)})
        out = svc.settings.tmp_dir / f"result-{uuid.uuid4()}"
        cleanup = BackgroundTask(lambda: out.unlink(missing_ok=True))
        if format == "nii.gz":
            from segloop.io import save_mask

            vol = await run_in_threadpool(svc.source_volume, job)
            path = out.with_suffix(".nii.gz")
            await run_in_threadpool(save_mask, labels, vol, path)
            cleanup = BackgroundTask(lambda: path.unlink(missing_ok=True))
            return FileResponse(path, media_type="application/gzip",
                                filename=f"{job_id}_v{n}_mask.nii.gz", background=cleanup,
                                headers={"X-Mask-Version": str(n)})
        if job["source_format"] != "dicom":
            raise ConflictError("DICOM-SEG export needs a DICOM upload; this job came from "
                                f"{job['source_format']} (download format=nii.gz instead)")
        if n == 0 or not labels.any():
            raise ConflictError("the mask is empty: nothing to export as DICOM-SEG")
        from segloop.io import write_dicom_seg

        vol = await run_in_threadpool(svc.source_volume, job)
        objs = svc.store.list_objects(job_id, who)
        segs = {int(o["label_value"]): str(o["name"]) for o in objs}
        path = out.with_suffix(".dcm")
        await run_in_threadpool(write_dicom_seg, labels, vol, path, segs)
        cleanup = BackgroundTask(lambda: path.unlink(missing_ok=True))
        return FileResponse(path, media_type="application/dicom",
                            filename=f"{job_id}_v{n}_seg.dcm", background=cleanup,
                            headers={"X-Mask-Version": str(n)})

    @r.put("/{job_id}/mask", summary="Upload an edited label map (NIfTI, canonical or source grid)")
    async def put_mask(job_id: str, request: Request, svc: Svc, who: Who) -> dict[str, Any]:
        job = await run_in_threadpool(svc.store.get_job, job_id, who)
        data = await read_small_body(request, min(svc.settings.max_upload_bytes,
                                                  svc.settings.max_volume_bytes))

        def parse_and_store() -> int:
            can = files.load_canonical(svc.store.job_dir(job_id), job["modality"])
            src = None if tuple(job["source_shape"]) == tuple(job["shape"]) and \
                can.is_canonical() and job["source_format"] == "nifti" else \
                svc.source_volume(job)
            labels = files.read_mask_upload(data, can, src)
            return svc.store.edit_mask(job_id, who, labels)

        n = await run_in_threadpool(parse_and_store)
        svc.bus.publish(job_id, {"type": "version", "job_id": job_id, "version": n,
                                 "source": "edit"})
        return {"job_id": job_id, "version": n}

    @r.get("/{job_id}/versions")
    def versions(job_id: str, svc: Svc, who: Who) -> list[dict[str, Any]]:
        return svc.store.list_versions(job_id, who)

    @r.post("/{job_id}/undo")
    def undo(job_id: str, svc: Svc, who: Who) -> dict[str, Any]:
        n = svc.store.move_current(job_id, who, "undo")
        svc.bus.publish(job_id, {"type": "version", "job_id": job_id, "version": n})
        return {"job_id": job_id, "current_version": n}

    @r.post("/{job_id}/redo")
    def redo(job_id: str, svc: Svc, who: Who) -> dict[str, Any]:
        n = svc.store.move_current(job_id, who, "redo")
        svc.bus.publish(job_id, {"type": "version", "job_id": job_id, "version": n})
        return {"job_id": job_id, "current_version": n}

    @r.post("/{job_id}/review")
    def review(job_id: str, svc: Svc, who: Who, body: ReviewRequest | None = None
               ) -> dict[str, Any]:
        return svc.store.review(job_id, who, (body or ReviewRequest()).version)

    @r.get("/{job_id}/objects")
    def objects(job_id: str, svc: Svc, who: Who) -> list[dict[str, Any]]:
        return svc.store.list_objects(job_id, who)

    @r.post("/{job_id}/objects", status_code=201)
    def add_object(job_id: str, body: ObjectRequest, svc: Svc, who: Who) -> dict[str, Any]:
        return svc.store.upsert_object(job_id, who, None, body.name, body.colour,
                                       body.label_value)

    @r.patch("/{job_id}/objects/{object_id}")
    def edit_object(job_id: str, object_id: ObjectId, body: ObjectRequest, svc: Svc, who: Who
                    ) -> dict[str, Any]:
        return svc.store.upsert_object(job_id, who, object_id, body.name, body.colour,
                                       body.label_value)

    return r


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event.get('type', 'message')}\ndata: {json.dumps(event)}\n\n".encode()


async def _event_stream(svc: Services, sub: Any, job_id: str, who: Principal,
                        task_id: str | None, request: Request, first: dict[str, Any]
                        ) -> AsyncIterator[bytes]:
    """``first``: the job status (no ``task_id``) or the task, read after subscribing."""
    try:
        yield _sse({**first, "type": "status"})
        if task_id is not None and first["state"] in TERMINAL:
            yield _sse({**first, "type": {"succeeded": "done"}.get(first["state"],
                                                                   first["state"])})
            return
        last = time.monotonic()
        while True:
            ev = await sub.get(timeout=1.0)
            if ev is None:
                if await request.is_disconnected():
                    return
                if time.monotonic() - last > 15:
                    last = time.monotonic()
                    yield b": keep-alive\n\n"
                if task_id is not None:  # a lost event (e.g. broker blip) must not hang us
                    t = await run_in_threadpool(svc.store.task_for, job_id, task_id, who)
                    if t["state"] in TERMINAL:
                        yield _sse({**t, "type": {"succeeded": "done"}.get(t["state"],
                                                                           t["state"])})
                        return
                continue
            yield _sse(ev)
            if task_id is not None and ev.get("task_id") == task_id and \
                    ev.get("type") in ("done", "failed", "cancelled"):
                return
    finally:
        await sub.close()


def _system_router() -> APIRouter:
    r = APIRouter(prefix="/api/v1/system", tags=["system"])

    @r.get("/status")
    def status(svc: Svc, who: Who) -> dict[str, Any]:
        """Queue and engine state for everyone; host memory/load, GPUs and broker details
        for reviewers and admins only (an annotator gets the reduced view)."""
        depth = svc.store.queue_depth()
        out: dict[str, Any] = {"version": __version__, "queue": svc.settings.queue,
                               "tasks": depth, "default_engine": svc.default_engine()}
        if not who.is_reviewer:
            return out
        out.update(host=host_info(), gpus=gpu_info())
        if isinstance(svc.queue, CeleryQueue):
            try:
                out["broker_queue_length"] = svc.queue.depth()
            except Exception as exc:
                out["broker_error"] = str(exc)
        else:
            out["worker_threads"] = svc.settings.workers
            out["cached_sessions"] = len(svc.runtime.cache)
            out["cached_session_bytes"] = svc.runtime.cache.nbytes
        return out

    @r.get("/gpu")
    def gpu(svc: Svc, who: Who) -> list[dict[str, Any]]:
        require_reviewer(who, "reading the host's GPUs")
        return gpu_info()

    @r.get("/jobs/active")
    def active(svc: Svc, who: Who) -> list[dict[str, Any]]:
        rows = svc.store.active_tasks()
        return rows if who.is_reviewer else [t for t in rows if t["owner"] == who.name]

    @r.get("/model")
    def model(svc: Svc, who: Who) -> dict[str, Any]:
        return {"default_engine": svc.default_engine(), "engines": svc.engine_names(refresh=True),
                "generation": svc.store.get_kv("model_generation", "0"),
                "loaded_in_api_process": sorted(svc.runtime.loaded_engines)}

    @r.post("/model/reload")
    def reload(svc: Svc, who: Who, body: ReloadRequest | None = None) -> dict[str, Any]:
        require_reviewer(who, "reloading models")
        if body is not None and body.engine:
            known = svc.engine_names(refresh=True)
            if body.engine != "auto" and body.engine not in known:
                raise InputError(f"unknown engine {body.engine!r}; known: {', '.join(known)}")
            svc.store.set_kv("default_engine", body.engine)
        gen = str(int(svc.store.get_kv("model_generation", "0")) + 1)
        svc.store.set_kv("model_generation", gen)
        svc.store.audit(who.name, "model-reload", None, engine=body.engine if body else None)
        return {"generation": gen, "default_engine": svc.default_engine()}

    @r.post("/cleanup")
    def cleanup(svc: Svc, who: Who, body: CleanupRequest | None = None) -> dict[str, Any]:
        b = body or CleanupRequest()
        return svc.store.cleanup(who, b.older_than_days, b.include_reviewed)

    @r.get("/audit")
    def audit(svc: Svc, who: Who, limit: int = Query(200, ge=1, le=5000),
              user: str | None = None) -> list[dict[str, Any]]:
        require_reviewer(who, "reading the audit log")
        return svc.store.audit_log(limit, user)

    @r.get("/engines")
    def engines(svc: Svc, who: Who) -> dict[str, Any]:
        return {"engines": svc.engine_names(refresh=True), "default": svc.default_engine()}

    return r


class _Observe:
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
    app.add_middleware(_Observe, metrics=svc.metrics)

    @app.get("/health", tags=["system"])
    async def health() -> dict[str, Any]:  # on the event loop: never queued behind uploads
        return {"status": "ok", "version": __version__, "queue": settings.queue}

    @app.get("/metrics", tags=["system"], include_in_schema=False)
    def metrics(who: Who) -> Response:  # any role's key when keys are required (Prometheus:
        # `authorization: {credentials_file: ...}` with a dedicated user's key)
        svc.metrics.set_queue(svc.store.queue_depth())
        svc.metrics.set_tasks(svc.store.task_counts())
        body, ctype = svc.metrics.render()
        return Response(body, media_type=ctype)

    app.include_router(_jobs_router())
    app.include_router(_system_router())
    return app
