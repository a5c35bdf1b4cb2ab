"""MONAI Label's REST protocol under ``/monailabel/``: 3D Slicer, OHIF and MITK talk to segloop.

The clients use raw ``http.client`` (no redirects), so every path is declared exactly as they
call it, trailing slashes included. Routes are thin: they read the request, call
:class:`~segloop.protocols.ml_store.MlStore`, :func:`~segloop.protocols.tasks.run_steps` or
the :class:`~segloop.protocols.ml_train.Trainer`, and answer in MONAI Label's shapes.

Models: one per segloop engine (and fine-tuned run ``ENGINE@RUN``), ``type: deepgrow``,
``dimension: 3`` (box/clicks -> propagated 3D mask), plus ``<engine>_2d`` (the clicked slice
only). An ``/infer`` call carries all clicks so far; when they extend the previous call's
(same ROI, same job version) only the new clicks run, as segloop refinements; otherwise the
object is cleared and segmented afresh. Auth: the same API keys and roles as the REST API
(``Authorization: Bearer KEY``); ``POST /auth/token`` takes a user name and the key as
password. Imports segloop.api's dependencies, jobs and io; never engines or torch.
Must not import segloop.cli (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from segloop import __version__
from segloop.api.app import Services, Svc, Who
from segloop.errors import InputError
from segloop.jobs import files
from segloop.jobs.errors import AuthError, NotFoundError
from segloop.jobs.records import JobRecord
from segloop.jobs.store import Principal, require_reviewer

from .ml_infer import run_infer
from .ml_store import FINAL, MlStore
from .ml_train import Trainer
from .refs import RefStore
from .tasks import Form, read_form

__all__ = ["MlState", "monailabel_router"]

PREFIX = "/monailabel"
_2D = "_2d"


class MlState:
    """What the MONAI Label routes share: the datastore view and the training child."""

    def __init__(self, svc: Services, refs: RefStore) -> None:
        self.svc, self.refs = svc, refs
        self.store = MlStore(svc, refs)
        self.trainer = Trainer(svc.settings)


async def _state(request: Request) -> MlState:
    st: MlState = request.app.state.monailabel
    return st


St = Annotated[MlState, Depends(_state)]


def _params(form: Form, name: str = "params") -> dict[str, Any]:
    raw = form.fields.get(name) or "{}"
    try:
        p = json.loads(raw)
    except ValueError:
        raise InputError(f"the form field {name!r} is not JSON") from None
    if not isinstance(p, dict):
        raise InputError(f"the form field {name!r} must be a JSON object")
    return p


def _model(svc: Services, model: str) -> tuple[str, bool]:
    """(engine, three_d) of a MONAI Label model name."""
    names = svc.engine_names()
    for refresh in (False, True):
        if refresh:
            names = svc.engine_names(refresh=True)
        if model in names:
            return model, True
        if model.endswith(_2D) and model[: -len(_2D)] in names:
            return model[: -len(_2D)], False
    raise NotFoundError(f"no model {model!r}; models: {', '.join(names)} (and NAME{_2D})")


def _info(st: MlState, who: Principal) -> dict[str, Any]:
    svc = st.svc
    models: dict[str, Any] = {}
    default = svc.default_engine()
    for name in svc.engine_names(refresh=True):
        desc = f"segloop engine {name}" + (" (default)" if name == default else "")
        common = {"type": "deepgrow", "labels": {"object": 1}, "config": {},
                  "description": desc}
        models[name] = {**common, "dimension": 3}
        models[f"{name}{_2D}"] = {**common, "dimension": 2,
                                  "description": desc + ", one slice"}
    return {
        "name": "segloop", "description": "segloop over the MONAI Label protocol",
        "version": __version__, "labels": ["object"], "models": models,
        "trainers": {n: {"description": f"segloop train --model {n}"}
                     for n in svc.engine_names() if n.startswith(("medsam2", "sam2.1"))},
        "strategies": {
            "first": {"description": "the first unlabeled image (by id)"},
            "random": {"description": "a random unlabeled image"},
            "segloop": {"description": "unlabeled images with the least work so far first "
                                       "(fewest mask versions, then oldest upload)"},
        },
        "scoring": {}, "train_stats": {}, "datastore": st.store.status(who),
    }


def monailabel_router() -> APIRouter:
    """The MONAI Label routes (mounted under ``/monailabel``)."""
    r = APIRouter(prefix=PREFIX, tags=["monailabel"])

    # ------------------------------------------------------------------ app, auth
    @r.get("/info/", summary="MONAI Label app info: one deepgrow model per engine")
    def info(st: St, who: Who) -> dict[str, Any]:
        return _info(st, who)

    @r.get("/auth/", summary="Whether API keys are required")
    def auth(svc: Svc) -> dict[str, Any]:
        return {"enabled": svc.settings.auth_required, "client_id": "segloop", "realm": ""}

    @r.post("/auth/token", summary="A token for user NAME: send the API key as password")
    async def token(request: Request, svc: Svc) -> dict[str, Any]:
        form = await read_form(request, svc)
        form.cleanup()
        user, key = form.fields.get("username", ""), form.fields.get("password", "")
        who = await run_in_threadpool(svc.store.authenticate, key) if key else None
        if who is None or (user and user != who.name):
            if not svc.settings.auth_required and not key:
                return {"access_token": None, "token_type": None}
            raise AuthError("wrong user name or API key (the password is the segloop API key)")
        return {"access_token": key, "token_type": "Bearer"}

    @r.get("/auth/token/valid", summary="Whether the token is valid")
    def token_valid(who: Who) -> dict[str, Any]:
        return {"username": who.name, "roles": [who.role], "email": "", "name": who.name}

    # ------------------------------------------------------------------ sessions
    @r.put("/session/", summary="Upload an image as a session (a segloop job)")
    async def create_session(request: Request, st: St, who: Who, expiry: int = 0
                             ) -> dict[str, Any]:
        form = await read_form(request, st.svc)
        try:
            path, name = await run_in_threadpool(form.upload, st.svc.settings.tmp_dir, "files",
                                                 "file")
            return await run_in_threadpool(st.store.create_session, who, path, name, expiry)
        finally:
            form.cleanup()

    @r.get("/session/{session_id}")
    def get_session(session_id: str, st: St, who: Who, update_ts: bool = False
                    ) -> dict[str, Any]:
        return st.store.session_info(st.store.session(session_id, who, touch=update_ts))

    @r.delete("/session/{session_id}")
    def remove_session(session_id: str, st: St, who: Who) -> dict[str, Any]:
        return st.store.remove_session(session_id, who)

    # ------------------------------------------------------------------ infer
    @r.post("/infer/{model}", summary="Box (roi) and clicks -> mask on the upload's grid")
    async def infer(model: str, request: Request, st: St, who: Who, image: str = "",
                    session_id: str = "",
                    output: Literal["image", "json", "all"] | None = None) -> Response:
        form = await read_form(request, st.svc)
        form.cleanup()
        p = _params(form)
        engine, three_d = _model(st.svc, model)
        if not (session_id or image):
            raise InputError("give ?image=ID (a datastore image) or ?session_id=")

        def resolve() -> JobRecord:  # in run_infer's first thread-pool hop: one job read
            if session_id:
                return st.store.session_job(session_id, who)[1]
            return st.store.image(image, who)[1]

        res = await run_infer(st.svc, st.refs, who, resolve, engine, three_d, p)
        if output == "json":
            res.path.unlink(missing_ok=True)
            return JSONResponse(res.params)
        cleanup = BackgroundTask(lambda: res.path.unlink(missing_ok=True))
        if output == "image":
            return FileResponse(res.path, filename=res.path.name, background=cleanup,
                                media_type="application/octet-stream")
        body, ctype = _multipart(res.params, res.path)
        res.path.unlink(missing_ok=True)
        return Response(body, media_type=ctype)

    # ------------------------------------------------------------------ datastore
    @r.get("/datastore/", summary="Datastore: stats (default), all, or train pairs")
    def datastore(st: St, who: Who, output: Literal["stats", "all", "train"] = "stats"
                  ) -> Any:
        if output == "all":
            return st.store.json(who)
        if output == "train":
            return st.store.datalist(who)
        return st.store.status(who)

    async def add_image(request: Request, st: St, who: Who, image: str | None) -> dict[str, Any]:
        form = await read_form(request, st.svc)
        try:
            path, name = await run_in_threadpool(form.upload, st.svc.settings.tmp_dir, "file",
                                                 "files")
            image_id = image or _stem(name) or str(uuid.uuid4())
            return await run_in_threadpool(st.store.add_image, who, image_id, path, name,
                                           _params(form))
        finally:
            form.cleanup()

    @r.put("/datastore/", summary="Upload an image (the Python client's path)")
    async def put_image_old(request: Request, st: St, who: Who, image: str | None = None
                            ) -> dict[str, Any]:
        return await add_image(request, st, who, image)

    @r.put("/datastore/image", summary="Upload an image (a new segloop job)")
    async def put_image(request: Request, st: St, who: Who, image: str | None = None
                        ) -> dict[str, Any]:
        return await add_image(request, st, who, image)

    @r.get("/datastore/image", summary="Download an image as uploaded")
    def get_image(image: str, st: St, who: Who) -> FileResponse:
        ref, _job = st.store.image(image, who)
        assert ref.job_id is not None
        jdir = st.svc.store.job_dir(ref.job_id)
        src = jdir / st.svc.store.source_rel(ref.job_id)
        if not src.is_file():  # a DICOM series: its canonical NIfTI
            src = files.canonical_path(jdir)
        ext = "".join(Path(src.name).suffixes) or ".nii"
        return FileResponse(src, filename=f"{image}{ext}", media_type="application/octet-stream")

    @r.head("/datastore/image", summary="Whether an image exists")
    def head_image(image: str, st: St, who: Who) -> Response:
        st.store.image(image, who)
        return Response(status_code=200)

    @r.delete("/datastore/image", summary="Remove an image (its job)")
    def delete_image(id: str, st: St, who: Who) -> dict[str, Any]:
        st.store.remove_image(id, who)
        return {}

    @r.get("/datastore/image/info")
    def image_info(image: str, st: St, who: Who) -> dict[str, Any]:
        ref, job = st.store.image(image, who)
        return st.store.image_info(ref, job)

    @r.put("/datastore/image/info")
    async def put_image_info(request: Request, image: str, st: St, who: Who) -> dict[str, Any]:
        form = await read_form(request, st.svc)
        form.cleanup()
        return await run_in_threadpool(st.store.update_image_info, image,
                                       _params(form, "info"), who)

    @r.put("/datastore/label", summary="Save a label; tag 'final' = a reviewed case")
    async def put_label(request: Request, image: str, st: St, who: Who, tag: str = FINAL
                        ) -> dict[str, Any]:
        form = await read_form(request, st.svc)
        try:
            path, name = form.upload(st.svc.settings.tmp_dir, "label", "file")
            suffix = "".join(Path(name).suffixes)[-12:] or ".nii.gz"
            named = path.with_name(path.name + suffix)
            path.rename(named)
            form.files.setdefault("label.named", []).append((named, name))  # for cleanup
            return await run_in_threadpool(st.store.save_label, who, image, tag or FINAL, named,
                                           _params(form))
        finally:
            form.cleanup()

    @r.get("/datastore/label", summary="Download a label on the image's grid (.nii.gz)")
    async def get_label(label: str, st: St, who: Who, tag: str = FINAL) -> FileResponse:
        ref, n = await run_in_threadpool(st.store.label, label, tag, who)
        assert ref.job_id is not None
        job = await run_in_threadpool(st.svc.store.get_job, ref.job_id, who)
        labels, _ = await run_in_threadpool(st.svc.store.labels, ref.job_id, who, n)
        vol = await run_in_threadpool(st.svc.source_volume, job)
        out = st.svc.settings.tmp_dir / f"label-{uuid.uuid4()}.nii.gz"
        from segloop.io import save_mask

        await run_in_threadpool(lambda: save_mask(labels, vol, out, durable=False))
        return FileResponse(out, filename=f"{label}.nii.gz", media_type="application/gzip",
                            background=BackgroundTask(lambda: out.unlink(missing_ok=True)))

    @r.get("/datastore/label/info")
    def label_info(label: str, tag: str, st: St, who: Who) -> dict[str, Any]:
        ref, n = st.store.label(label, tag, who)
        return {**ref.data["labels"][tag].get("info", {}), "version": n}

    @r.put("/datastore/label/info")
    async def put_label_info(request: Request, label: str, tag: str, st: St, who: Who
                             ) -> dict[str, Any]:
        form = await read_form(request, st.svc)
        form.cleanup()
        return await run_in_threadpool(st.store.update_label_info, label, tag,
                                       _params(form, "info"), who)

    # ------------------------------------------------------------------ active learning
    @r.post("/activelearning/{strategy}", summary="Next image to label ({} when none left)")
    def next_sample(strategy: str, st: St, who: Who,
                    params: dict[str, Any] | None = None) -> dict[str, Any]:
        todo = st.store.unlabeled(who)
        if strategy not in ("first", "random", "segloop"):
            raise NotFoundError(f"no strategy {strategy!r}; strategies: first, random, segloop")
        if not todo:
            return {}
        if strategy == "first":
            pick = sorted(todo, key=lambda c: c.key)[0]
        elif strategy == "random":
            pick = todo[int(np.random.default_rng().integers(len(todo)))]
        else:  # least work first; equal work: segloop's oldest upload, then the server's
            pick = sorted(todo, key=lambda c: (c.versions, c.created == "", c.created))[0]
        from urllib.parse import quote_plus

        return {**pick.info, "id": pick.key, "name": pick.key,
                "path": f"{PREFIX}/datastore/image?image={quote_plus(pick.key)}",
                "strategy": strategy}

    # ------------------------------------------------------------------ train
    @r.get("/train/", summary="Training state (check_if_running: 200 running, 404 idle)")
    def train_status(st: St, who: Who, check_if_running: bool = False) -> Any:
        if check_if_running:
            if not st.trainer.running():
                return JSONResponse({"detail": "no training is running"}, status_code=404)
            return st.trainer.status()
        return st.trainer.status()

    @r.post("/train/", summary="Start training the default trainable model")
    def train_default(st: St, who: Who, params: dict[str, Any] | None = None) -> dict[str, Any]:
        require_reviewer(who, "starting a training run")
        return st.trainer.start("medsam2", params or {}, who.name)

    @r.post("/train/{model}", summary="Start `segloop train --from-datastore` for a model")
    def train(model: str, st: St, who: Who, params: dict[str, Any] | None = None
              ) -> dict[str, Any]:
        require_reviewer(who, "starting a training run")
        out = st.trainer.start(model, params or {}, who.name)
        st.svc.store.audit(who.name, "train-start", None, model=model, run=out["name"])
        return out

    @r.delete("/train/", summary="Stop the running training")
    def train_stop(st: St, who: Who) -> dict[str, Any]:
        require_reviewer(who, "stopping a training run")
        return st.trainer.stop()

    return r


def _stem(filename: str) -> str:
    name = Path(filename).name
    for ext in (".nii.gz", ".seg.nrrd", ".nii", ".nrrd", ".mha", ".mhd", ".zip", ".dcm"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _multipart(params: dict[str, Any], path: Path) -> tuple[bytes, str]:
    """MONAI Label's infer answer: a ``params`` JSON field and the result file ``image``."""
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"params\"\r\n"
            f"Content-Type: application/json\r\n\r\n{json.dumps(params)}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
            f"filename=\"{path.name}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
    body = head.encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"

