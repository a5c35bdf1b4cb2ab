"""The API's request dependencies: :class:`Services` (built once per app), ``Svc`` and ``Who``.

``Who`` authenticates the caller: with ``settings.auth_required`` every route but ``/health``
needs a key (``X-API-Key`` header, ``Authorization: Bearer``, or ``?api_key=`` for EventSource /
viewer downloads); without it (loopback), callers are the local admin unless they send a key.
The protocol adapters (segloop.protocols) use these too. Must not import routes, engines,
torch, the worker or the web UI.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from segloop.config import Settings
from segloop.io.volume import Volume
from segloop.jobs import files
from segloop.jobs.errors import AuthError
from segloop.jobs.events import EventBus, make_bus
from segloop.jobs.ingest import IngestPool
from segloop.jobs.queue import CeleryQueue, EmbeddedQueue, TaskQueue
from segloop.jobs.records import JobRecord
from segloop.jobs.runner import Runtime
from segloop.jobs.store import LOCAL_ADMIN, JobStore, Principal

from .metrics import Metrics

__all__ = ["Services", "Svc", "Who", "get_principal", "get_services"]


class Services:
    """Everything a request needs, built once per app by :func:`segloop.api.app.create_app`."""

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

    def source_volume(self, job: JobRecord) -> Volume:
        """The uploaded volume (source grid), cached for a few jobs (for result exports)."""
        jid = job.job_id
        with self._sources_lock:
            vol = self._sources.get(jid)
        if vol is None and job.image2d:  # a picture: its one-slice canonical grid
            vol = files.load_canonical(self.store.job_dir(jid), job.modality)
        if vol is None:
            vol = files.load_source(self.store.job_dir(jid), self.store.source_rel(jid),
                                    self.settings.max_voxels)
            with self._sources_lock:
                self._sources[jid] = vol
                while len(self._sources) > 4:
                    self._sources.popitem(last=False)
        return vol

    def engine_names(self, refresh: bool = False) -> list[str]:
        """The engine catalogue (registered engines, then ENGINE@RUN fine-tuned runs; see
        :func:`segloop.engines.registry.engine_catalogue`), read once, again on ``refresh``."""
        from segloop.engines.registry import engine_catalogue

        if refresh or self._engines is None:
            self._engines = engine_catalogue()
        return self._engines

    def engines_unavailable(self) -> dict[str, str]:
        """Engines of the catalogue that cannot run in this process, with the reason (see
        :func:`segloop.engines.registry.engine_unavailable`)."""
        from segloop.engines.registry import engine_unavailable

        return engine_unavailable(self.engine_names())

    def default_engine(self) -> str:
        """The engine used when a request names none (switchable by model reload)."""
        return self.store.get_kv("default_engine", self.settings.default_engine)

    def close(self) -> None:
        self.ingest.close()
        self.queue.close()
        self.bus.close()
        self.store.close()


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
