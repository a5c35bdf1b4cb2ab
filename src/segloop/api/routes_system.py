"""The ``/api/v1/system`` routes: status, GPUs, active tasks, models, cleanup, audit, engines.

Routes are thin: check the caller's role, call the job store or the services, return.
Must not import engines, torch, the worker or the web UI.
"""

from __future__ import annotations

from fastapi import APIRouter, Query

from segloop import __version__
from segloop.errors import InputError
from segloop.jobs.queue import CeleryQueue
from segloop.jobs.records import ActiveTaskRecord, AuditRecord, CleanupReport
from segloop.jobs.store import require_reviewer

from .deps import Svc, Who
from .host import gpu_info, host_info
from .schemas import (
    CleanupRequest,
    EnginesOut,
    GpuOut,
    ModelOut,
    ReloadOut,
    ReloadRequest,
    SystemStatusOut,
)

__all__ = ["system_router"]


def system_router() -> APIRouter:
    """The system routes (a new router per app)."""
    r = APIRouter(prefix="/api/v1/system", tags=["system"])

    @r.get("/status", response_model=SystemStatusOut, response_model_exclude_unset=True)
    def status(svc: Svc, who: Who) -> SystemStatusOut:
        """Queue and engine state for everyone; host memory/load, GPUs and broker details
        for reviewers and admins only (an annotator gets the reduced view: only the fields
        set here are sent)."""
        depth = svc.store.queue_depth()
        out = SystemStatusOut(version=__version__, queue=svc.settings.queue, tasks=depth,
                              default_engine=svc.default_engine())
        if not who.is_reviewer:
            return out
        out.host, out.gpus = host_info(), gpu_info()
        if isinstance(svc.queue, CeleryQueue):
            try:
                out.broker_queue_length = svc.queue.depth()
            except Exception as exc:
                out.broker_error = str(exc)
        else:
            out.worker_threads = svc.settings.workers
            out.cached_sessions = len(svc.runtime.cache)
            out.cached_session_bytes = svc.runtime.cache.nbytes
        return out

    @r.get("/gpu", response_model=list[GpuOut])
    def gpu(svc: Svc, who: Who) -> list[GpuOut]:
        require_reviewer(who, "reading the host's GPUs")
        return gpu_info()

    @r.get("/jobs/active", response_model=list[ActiveTaskRecord])
    def active(svc: Svc, who: Who) -> list[ActiveTaskRecord]:
        rows = svc.store.active_tasks()
        return rows if who.is_reviewer else [t for t in rows if t.owner == who.name]

    @r.get("/model", response_model=ModelOut)
    def model(svc: Svc, who: Who) -> ModelOut:
        return ModelOut(default_engine=svc.default_engine(),
                        engines=svc.engine_names(refresh=True),
                        generation=svc.store.get_kv("model_generation", "0"),
                        loaded_in_api_process=sorted(svc.runtime.loaded_engines))

    @r.post("/model/reload", response_model=ReloadOut)
    def reload(svc: Svc, who: Who, body: ReloadRequest | None = None) -> ReloadOut:
        require_reviewer(who, "reloading models")
        if body is not None and body.engine:
            known = svc.engine_names(refresh=True)
            if body.engine != "auto" and body.engine not in known:
                raise InputError(f"unknown engine {body.engine!r}; known: {', '.join(known)}")
            svc.store.set_kv("default_engine", body.engine)
        gen = str(int(svc.store.get_kv("model_generation", "0")) + 1)
        svc.store.set_kv("model_generation", gen)
        svc.store.audit(who.name, "model-reload", None, engine=body.engine if body else None)
        return ReloadOut(generation=gen, default_engine=svc.default_engine())

    @r.post("/cleanup", response_model=CleanupReport)
    def cleanup(svc: Svc, who: Who, body: CleanupRequest | None = None) -> CleanupReport:
        b = body or CleanupRequest()
        return svc.store.cleanup(who, b.older_than_days, b.include_reviewed)

    @r.get("/audit", response_model=list[AuditRecord])
    def audit(svc: Svc, who: Who, limit: int = Query(200, ge=1, le=5000),
              user: str | None = None) -> list[AuditRecord]:
        require_reviewer(who, "reading the audit log")
        return svc.store.audit_log(limit, user)

    @r.get("/engines", response_model=EnginesOut)
    def engines(svc: Svc, who: Who) -> EnginesOut:
        return EnginesOut(engines=svc.engine_names(refresh=True), default=svc.default_engine(),
                          unavailable=svc.engines_unavailable())

    return r
