"""The segloop web viewer: serves the single-page viewer and its assets on a FastAPI app.

``mount(app, settings)`` adds three things to an app built by ``segloop.api.create_app``:

* ``GET /`` -- the viewer page (``static/index.html``);
* ``/static/...`` -- the page's own scripts and styles (this package's ``static`` folder);
* ``/vendor/niivue/...`` -- NiiVue's browser bundle, served from the checkout's
  ``node_modules/@niivue/niivue/dist`` (installed by ``npm ci``; never committed), and
  ``GET /web/config.json``, which tells the page whether that bundle is present so it can
  show "run npm ci" instead of a blank screen.

The page talks to the API only over HTTP (the routes of docs/service.md), so this module is a
leaf: it imports FastAPI/Starlette and the standard library, never ``segloop.api``,
``segloop.jobs``, engines or torch.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.ism,
segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles

__all__ = ["STATIC_DIR", "find_niivue_dist", "mount", "mount_web"]

log = logging.getLogger(__name__)

#: the page's own files (index.html, *.js, *.css), shipped inside the package
STATIC_DIR = Path(__file__).resolve().parent / "static"

_NIIVUE_REL = Path("node_modules") / "@niivue" / "niivue" / "dist"


def find_niivue_dist(node_modules: Path | None = None) -> Path | None:
    """The folder holding NiiVue's ``index.js`` ES module, or None when it is not installed.

    With ``node_modules`` given, looks only there. Otherwise looks, in order, at
    ``$SEGLOOP_NODE_MODULES`` (a ``node_modules`` folder), the checkout this package lives in
    (``<repo>/node_modules``, an editable install), and the current directory's
    ``node_modules``.
    """
    if node_modules is not None:
        d = Path(node_modules) / "@niivue" / "niivue" / "dist"
        return d if (d / "index.js").is_file() else None
    candidates: list[Path] = []
    env = os.environ.get("SEGLOOP_NODE_MODULES")
    if env:
        candidates.append(Path(env).expanduser() / "@niivue" / "niivue" / "dist")
    here = Path(__file__).resolve()
    if len(here.parents) > 3:
        candidates.append(here.parents[3] / _NIIVUE_REL)
    candidates.append(Path.cwd() / _NIIVUE_REL)
    for c in candidates:
        if (c / "index.js").is_file():
            return c
    return None


def mount(app: FastAPI, settings: Any = None, *, node_modules: Path | None = None) -> None:
    """Serve the viewer at ``/`` of ``app`` (``settings`` is accepted for symmetry; unused).

    Call once, after the API routes exist. ``node_modules`` overrides where NiiVue is looked
    for (see :func:`find_niivue_dist`). When NiiVue is missing the page still loads and tells
    the user to run ``npm ci`` in the checkout.
    """
    del settings
    dist = find_niivue_dist(node_modules)
    if dist is None:
        log.warning("web viewer: NiiVue not found (node_modules/@niivue/niivue); run `npm ci` "
                    "in the segloop checkout to enable the viewer")
    index = STATIC_DIR / "index.html"
    no_cache = {"Cache-Control": "no-cache"}

    @app.get("/", include_in_schema=False)
    def viewer_page() -> FileResponse:
        return FileResponse(index, media_type="text/html", headers=no_cache)

    @app.get("/web/config.json", include_in_schema=False)
    def viewer_config() -> JSONResponse:
        return JSONResponse({
            "niivue": dist is not None,
            "niivue_url": "/vendor/niivue/index.js" if dist is not None else None,
            "install_hint": "run `npm ci` in the segloop checkout (it installs @niivue/niivue "
                            "into node_modules/), then restart `segloop serve`",
        }, headers=no_cache)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="web-static")
    if dist is not None:
        app.mount("/vendor/niivue", StaticFiles(directory=dist), name="web-niivue")


#: alias of :func:`mount`
mount_web = mount
