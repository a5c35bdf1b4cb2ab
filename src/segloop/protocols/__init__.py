"""Other clients' protocols served by ``segloop serve``: MONAI Label and nnInteractive v2.

Adapters over segloop's jobs, versions and datastore, like segloop.api (whose services and
auth dependencies they reuse): ``/monailabel/`` speaks MONAI Label's REST API (3D Slicer,
OHIF, MITK), ``/nninteractive/`` nnInteractive's v2 remote-inference protocol (Slicer's
nnInteractive module in Remote mode, napari-nninteractive). :func:`mount` adds both to an app
built by ``create_app``. Never imports engines or torch; nothing runs at import time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

__all__ = ["mount"]


def mount(app: FastAPI) -> None:
    """Add the protocol routes to ``app`` (its ``state.services`` must be set): creates the
    refs table and the per-app state both adapters share."""
    from .monailabel import MlState, monailabel_router
    from .nni_state import NniState
    from .nninteractive import nninteractive_router
    from .refs import RefStore

    svc = app.state.services
    refs = RefStore(svc.store.engine)
    refs.create()
    ml = MlState(svc, refs)
    app.state.monailabel = ml
    app.state.nninteractive = NniState(svc, refs)
    app.include_router(monailabel_router())
    app.include_router(nninteractive_router())

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as state:
            try:
                yield state
            finally:
                ml.trainer.close()  # a training child does not outlive the server

    app.router.lifespan_context = lifespan
