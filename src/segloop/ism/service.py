"""The ISM service: SAM-6D's instance-segmentation server API on port 8002.

``create_ism_app(settings)`` builds the FastAPI app (nothing happens at import time):
``POST /api/v1/inference`` (SAM-6D's request and response field names; unknown fields ignored),
``GET /health``, ``GET /metrics`` (Prometheus). :func:`mount_ism` adds the same routes to the
segloop API under ``/api/v1/ism/`` (``segloop serve --ism``).

Concurrency model: one :class:`~segloop.ism.pipeline.IsmPipeline` per process holds the backends
and the per-(template_dir, cad_path) templates and descriptors. Handlers decode the request on
Starlette's thread pool, then run the pipeline there under one ``threading.Lock``: concurrent
requests queue on that lock (first come, first served as the lock allows) and share the loaded
models; the event loop stays free, so ``/health`` and ``/metrics`` answer while a request runs.

Auth: bound beyond loopback (or ``ISM_REQUIRE_API_KEYS=true``), every route but ``/health``
needs a segloop API key (``X-API-Key`` or ``Authorization: Bearer``), checked against the same
user store as ``segloop serve`` (``segloop users add NAME``). Client paths (``template_dir``,
``cad_path``) must resolve under :attr:`IsmSettings.roots`; nothing else can be read.

Imports FastAPI, segloop.ism, segloop.config and the job store's key check (auth only).
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.concurrency import run_in_threadpool

from segloop import __version__
from segloop.errors import InputError, ModelNotAvailableError, SegloopError, VolumeTooLargeError

from .codec import decode_depth, decode_image, encode_png, parse_cam_k, to_rle, visualize
from .pipeline import IsmPipeline, IsmResult
from .settings import IsmSettings
from .types import BackendName, Scene

__all__ = ["InferenceRequest", "create_ism_app", "ism_router", "mount_ism", "serve"]

log = logging.getLogger("segloop.ism.service")


class AuthFailed(SegloopError):
    """Missing or wrong API key."""

    http_status = 401


class PathNotAllowed(SegloopError):
    """A client path outside the configured roots."""

    http_status = 403


class CamParams(BaseModel):
    """``cam_params``: intrinsics (validated by :func:`parse_cam_k`) and depth scale (raw × scale = mm)."""

    model_config = ConfigDict(extra="ignore")
    cam_K: Any
    depth_scale: float = 1.0


class InferenceRequest(BaseModel):
    """SAM-6D's request body; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    rgb_image: str
    depth_image: str
    cam_params: CamParams
    segmentor_model: str | None = None
    stability_score_thresh: float | None = None
    template_dir: str | None = None
    cad_path: str | None = None


def _failure(status: int, message: str, started: float) -> JSONResponse:
    return JSONResponse(status_code=status, content={
        "success": False, "detections": [], "scores": [], "inference_time": time.perf_counter() - started,
        "visualization": None, "template_dir_used": None, "cad_path_used": None, "error_message": message})


class IsmService:
    """State of one app: settings, pipeline, lock, metrics, key store."""

    def __init__(self, settings: IsmSettings, key_store_settings: Any = None) -> None:
        self.settings = settings
        self._key_store_settings = key_store_settings  # segloop Settings of the user store
        self.pipeline = IsmPipeline(checkpoints_dir=settings.checkpoints_dir,
                                    sam2_model=settings.sam2_model)
        self.lock = threading.Lock()
        self.registry = CollectorRegistry()
        self.requests = Counter("ism_requests_total", "inference requests", ["status"],
                                registry=self.registry)
        self.seconds = Histogram("ism_stage_seconds", "seconds per pipeline stage", ["stage"],
                                 registry=self.registry, buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120))
        self._store: Any = None

    def check_key(self, request: Request) -> None:
        """AuthFailed unless the request carries a valid key (only when keys are required)."""
        if not self.settings.auth_required:
            return
        key = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if key is None and auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        if not key:
            raise AuthFailed("this server needs an API key: send it as the X-API-Key header "
                             "(create one with `segloop users add NAME --role annotator`)")
        if self._store is None:
            from segloop.config import load_settings
            from segloop.jobs.store import JobStore

            self._store = JobStore(self._key_store_settings or load_settings(None))
        if self._store.authenticate(key) is None:
            raise AuthFailed("invalid API key")

    def confine(self, raw: str, field: str) -> Path:
        """``raw`` resolved; PathNotAllowed unless it lies under one of the configured roots."""
        p = Path(raw).expanduser().resolve()
        roots = self.settings.roots
        if not any(p == r or p.is_relative_to(r) for r in roots):
            raise PathNotAllowed(f"{field} {raw!r} is outside the folders this server may read "
                                 f"({', '.join(map(str, roots))}); set ISM_ALLOWED_ROOTS to add one")
        return p

    def resolve_paths(self, req: InferenceRequest) -> tuple[Path, Path]:
        """(template_dir, cad_path) of a request, confined; the template folder is created if needed."""
        s = self.settings
        if req.cad_path:
            cad = self.confine(req.cad_path, "cad_path")
        elif s.cad_model_path is not None:
            cad = s.cad_model_path.expanduser().resolve()
        else:
            raise InputError("no cad_path in the request and no ISM_CAD_MODEL_PATH on the server")
        if not cad.is_file():
            raise InputError(f"CAD model {cad} does not exist: give the path of the object's .ply")
        if cad.suffix.lower() != ".ply":
            raise InputError(f"CAD model {cad} is not a .ply file (SAM-6D's CAD models are PLY, in mm)")
        if req.template_dir:
            tpl = self.confine(req.template_dir, "template_dir")
        elif s.template_dir is not None and (s.cad_model_path is None or
                                             cad == s.cad_model_path.expanduser().resolve()):
            tpl = s.template_dir.expanduser().resolve()
        else:
            digest = hashlib.sha256(str(cad).encode()).hexdigest()[:12]
            tpl = s.cache_dir.expanduser().resolve() / f"{cad.stem}-{digest}"
        if tpl.exists() and not tpl.is_dir():
            raise InputError(f"template_dir {tpl} is a file, not a folder")
        tpl.mkdir(parents=True, exist_ok=True)
        return tpl, cad

    def backend_name(self, req: InferenceRequest) -> BackendName:
        """The request's backend (``segmentor_model``) or the server's default."""
        name = req.segmentor_model or self.settings.model_type.value
        try:
            return BackendName(name.lower())
        except ValueError:
            raise InputError(f"segmentor_model {name!r} is unknown: use one of "
                             f"{', '.join(b.value for b in BackendName)}") from None

    def infer(self, req: InferenceRequest) -> tuple[IsmResult, Scene, BackendName]:
        """Decode, check and run one request (blocking; called on the thread pool)."""
        s = self.settings
        rgb = decode_image(req.rgb_image, s.max_pixels)
        raw = decode_depth(req.depth_image, s.max_pixels)
        if rgb.shape[:2] != raw.shape:
            raise InputError(f"rgb_image is {rgb.shape[1]}×{rgb.shape[0]} but depth_image is "
                             f"{raw.shape[1]}×{raw.shape[0]}: send a registered RGB-D pair of one size")
        K = parse_cam_k(req.cam_params.cam_K)
        if not np.isfinite(req.cam_params.depth_scale) or req.cam_params.depth_scale <= 0:
            raise InputError("cam_params.depth_scale must be > 0 (raw depth × depth_scale = millimetres)")
        thresh = s.stability_threshold if req.stability_score_thresh is None else req.stability_score_thresh
        if not 0 <= thresh <= 1:
            raise InputError("stability_score_thresh must be in [0, 1]")
        tpl, cad = self.resolve_paths(req)
        scene = Scene(rgb=rgb, depth_mm=raw.astype(np.float32) * np.float32(req.cam_params.depth_scale), K=K)
        name = self.backend_name(req)
        with self.lock:
            try:
                self.pipeline.backend(name)
            except ModelNotAvailableError:
                if s.fallback_backend is None:
                    raise
                log.warning("backend %s unavailable: falling back to %s", name, s.fallback_backend)
                name = s.fallback_backend
            return self.pipeline.run(scene, name, tpl, cad, thresh), scene, name


def _response(res: IsmResult, scene: Scene, name: BackendName, started: float) -> dict[str, Any]:
    dets = []
    for d in res.detections:
        rle, bbox = to_rle(d.mask)
        dets.append({"category_id": 1, "score": d.score, "segmentation": rle, "bbox": bbox,
                     "semantic_score": d.semantic, "appearance_score": d.appearance,
                     "geometric_score": d.geometric, "visible_ratio": d.visible_ratio,
                     "template_id": d.template})
    best = res.detections[0].mask if res.detections else None
    t = res.timings
    return {"success": True, "detections": dets, "scores": [d.score for d in res.detections],
            "inference_time": time.perf_counter() - started,
            "visualization": encode_png(visualize(scene.rgb, best)),
            "template_dir_used": str(res.template_dir), "cad_path_used": str(res.cad_path),
            "error_message": None, "segmentor_model_used": name.value, "num_proposals": res.n_proposals,
            "timings": {"proposals": t.proposals, "descriptors": t.descriptors, "scoring": t.scoring,
                        **t.extra}}


def create_ism_app(settings: IsmSettings | None = None) -> FastAPI:
    """The ISM FastAPI app for ``settings`` (default: from the ISM_* environment)."""
    svc = IsmService(settings or IsmSettings())
    app = FastAPI(title="segloop ISM", version=__version__,
                  description="SAM-6D instance segmentation of a CAD object in RGB-D images")
    app.state.ism = svc
    app.include_router(ism_router(svc, inference_path="/api/v1/inference"))
    return app


def mount_ism(app: FastAPI, settings: Any) -> None:
    """Add the ISM routes to the segloop API (``segloop serve --ism``) under ``/api/v1/ism/``:
    ``inference``, ``health``, ``metrics``; API keys required exactly when the API requires them
    (``settings``: the API's segloop Settings, whose user store checks the keys)."""
    svc = IsmService(IsmSettings(require_api_keys=settings.auth_required), key_store_settings=settings)
    app.include_router(ism_router(svc, inference_path="/inference"), prefix="/api/v1/ism")


def ism_router(svc: IsmService, inference_path: str) -> APIRouter:
    """The ISM routes bound to ``svc``: ``/health``, ``/metrics`` and ``inference_path``."""
    app = APIRouter()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "healthy", "version": __version__, "model_type": svc.settings.model_type.value,
                "templates_cached": [t for t, _ in svc.pipeline.cached()],
                "busy": svc.lock.locked(), "auth_required": svc.settings.auth_required}

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        try:
            await run_in_threadpool(svc.check_key, request)
        except SegloopError as exc:
            return JSONResponse(status_code=exc.http_status,
                                content={"success": False, "error_message": str(exc)})
        return Response(generate_latest(svc.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(inference_path)
    async def inference(request: Request) -> JSONResponse:
        started = time.perf_counter()
        try:
            await run_in_threadpool(svc.check_key, request)
            size = int(request.headers.get("content-length") or 0)
            if size > svc.settings.max_request_bytes:
                raise VolumeTooLargeError(f"request body of {size} bytes is over this server's limit of "
                                          f"{svc.settings.max_request_bytes} (ISM_MAX_REQUEST_BYTES)")
            body = await request.body()
            try:
                req = InferenceRequest.model_validate(json.loads(body))
            except json.JSONDecodeError as exc:
                raise InputError(f"the request body is not JSON ({exc.msg} at character {exc.pos})") from None
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(x) for x in first["loc"]) or "body"
                raise InputError(f"request field {where}: {first['msg']} "
                                 "(needs rgb_image, depth_image, cam_params.cam_K)") from None
            res, scene, name = await run_in_threadpool(svc.infer, req)
        except SegloopError as exc:
            svc.requests.labels(str(exc.http_status)).inc()
            log.info("ism request refused (%d): %s", exc.http_status, exc)
            return _failure(exc.http_status, str(exc), started)
        except Exception:  # the server keeps serving; the client learns it was our fault
            log.exception("ism inference failed")
            svc.requests.labels("500").inc()
            return _failure(500, "internal error while running the ISM pipeline (see the server log)",
                            started)
        for stage, sec in (("proposals", res.timings.proposals), ("descriptors", res.timings.descriptors),
                           ("scoring", res.timings.scoring)):
            svc.seconds.labels(stage).observe(sec)
        svc.requests.labels("200").inc()
        return JSONResponse(await run_in_threadpool(_response, res, scene, name, started))

    return app


def serve(host: str | None = None, port: int | None = None) -> int:
    """Run the service with uvicorn (settings from ISM_*; ``host``/``port`` override)."""
    import uvicorn

    overrides: dict[str, Any] = {}
    if host:
        overrides["server_host"] = host
    if port:
        overrides["server_port"] = port
    settings = IsmSettings(**overrides)
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if settings.auth_required:
        from segloop.config import load_settings
        from segloop.jobs.store import JobStore

        store = JobStore(load_settings(None))
        try:
            n = store.count_users()
        finally:
            store.close()
        if n == 0:
            raise SegloopError(f"refusing to serve on {settings.server_host} without API keys: create one "
                               "with `segloop users add NAME --role admin`, or bind to 127.0.0.1")
    app = create_ism_app(settings)
    print(f"segloop ism: serving on http://{settings.server_host}:{settings.server_port}", flush=True)
    uvicorn.run(app, host=settings.server_host, port=settings.server_port, log_config=None,
                timeout_graceful_shutdown=5)
    return 0
