"""nnInteractive's v2 remote-inference protocol under ``/nninteractive/`` (Slicer, napari).

The client (``nnInteractiveRemoteInferenceSession``, server URL ``http://HOST:PORT/nninteractive``)
claims a lease, sends the image once, then interactions; each prediction answers with the
changed box of the target buffer (``X-Meta: {"ran_prediction", "bbox"}`` and the packed
values). Every interaction becomes segloop tasks on the lease's job (see
:mod:`segloop.protocols.nni_lease`; the shared state and the lease lookup are in
:mod:`segloop.protocols.nni_state`): a first box or click is one ``segment`` task (an initial
mask plus its propagation, one version), later ones are refinements. Supported: 2D boxes
(positive), points, an initial segmentation, undo, reset; 3D boxes, negative boxes, scribbles
and lassos are refused with 422 and reported false in ``/capabilities``. Auto-zoom (on by
default, as in nnInteractive): segloop's engines see whole slices and propagate through the
whole volume, the unbounded form of nnInteractive's zooming out until the object fits;
``set_do_autozoom(false)`` does what it does there: each interaction may change the mask only
inside one patch of :data:`PATCH` voxels per axis centred on it (a ``roi`` task param). Auth:
the API key as ``Authorization: Bearer`` (the client's ``api_key``), and the lease token must
belong to the same user. Imports segloop.api's dependencies and jobs; never engines or torch.
Must not import segloop.cli (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from segloop import __version__
from segloop.api.app import Svc, Who
from segloop.errors import InputError
from segloop.jobs.errors import ConflictError

from . import nni_array
from .nni_lease import Diff, Lease, lease_key
from .nni_state import AtCapacityError, L, NniState, St
from .refs import RefKind
from .tasks import Step, StepKind, run_steps_building

__all__ = ["nninteractive_router"]

PREFIX = "/nninteractive"
META = "X-Meta"
#: nnInteractive's patch edge (voxels): without auto-zoom an interaction changes one patch
PATCH = 192


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise InputError("the request body must be JSON") from None
    if not isinstance(body, dict):
        raise InputError("the request body must be a JSON object")
    return body


def _pack(lease: Lease, diff: Diff | None) -> tuple[list[list[int]] | None, bytes]:
    """The answer's bbox and packed values (the buffer's dtype)."""
    if diff is None or diff.bbox is None or diff.values is None:
        return None, b""
    dtype = str(lease.ref.data.get("buffer_dtype") or "uint8")
    return diff.bbox, nni_array.pack(diff.values.astype(dtype if dtype != "bool" else "bool"))


def _answer(lease: Lease, ran: bool, diff: Diff | None,
            packed: tuple[list[list[int]] | None, bytes] | None = None) -> Response:
    bbox, body = packed if packed is not None else _pack(lease, diff)
    meta: dict[str, Any] = {"ran_prediction": ran, "bbox": bbox}
    return Response(body, media_type="application/octet-stream",
                    headers={META: json.dumps(meta, separators=(",", ":"))})


Built = tuple[Diff, tuple[list[list[int]] | None, bytes]]


async def _predict(st: NniState, lease: Lease, make: Callable[[], list[Step]] | None,
                   run: bool) -> Response:
    """Queue the steps ``make`` returns (called in the thread pool: it may create the job);
    with ``run``, run everything pending and answer the diff."""

    def prepare() -> tuple[list[Step], npt.NDArray[np.uint8] | None, str]:
        # one thread-pool hop: the job's creation check, the steps, the "before" buffer
        pending = [Step(StepKind(s["kind"]), s["params"])
                   for s in lease.ref.data.get("pending", [])]
        pending += make() if make is not None else []
        if not run or not pending:
            lease.ref.data["pending"] = [{"kind": s.kind.value, "params": s.params}
                                         for s in pending]
            lease.save()
            return [], None, ""
        lease.ref.data["pending"] = []
        return pending, st.before(lease), lease.svc.default_engine()

    pending, before, engine = await run_in_threadpool(prepare)
    if before is None:
        return _answer(lease, False, None)
    assert lease.job_id is not None
    saved: list[bool] = []

    def save() -> None:  # the lease row is written while the worker runs, not before
        lease.save()
        saved.append(True)

    def build(labels: npt.NDArray[np.uint8]) -> Built:  # made while the version is flushed
        diff = lease.diff_to(before, lease.object_mask(labels), 0)
        return diff, _pack(lease, diff)

    try:
        tasks, early = await run_steps_building(lease.svc, lease.who, lease.job_id, pending,
                                                engine, build, after_submit=save)
    finally:
        if not saved:  # the steps were not even queued: still record that they are dropped
            await run_in_threadpool(lease.save)
    version = tasks[-1].get("version")
    if early is not None and version is not None:
        diff = dataclasses.replace(early[0], version=int(version))
        packed: tuple[list[list[int]] | None, bytes] | None = early[1]
    else:  # nothing offered in this process: the stored version
        diff = await run_in_threadpool(lease.diff, before, version)
        packed = None
    st.remember(lease, diff)
    return _answer(lease, True, diff, packed)


def _patch(lease: Lease, center: tuple[int, int, int]) -> dict[str, Any]:
    """``{"roi": ...}``: the :data:`PATCH`-voxel cube around ``center`` (canonical), inside
    the volume, when auto-zoom is off; ``{}`` when it is on."""
    if lease.ref.data.get("do_autozoom", True):
        return {}
    shape = lease.shape()
    p = lease.perm
    roi = []
    for c, axis in zip(center, p, strict=True):
        lo = c - PATCH // 2
        roi.append([max(0, lo), min(shape[axis], lo + PATCH) - 1])
    return {"roi": roi}


def _first_or_refine(lease: Lease, center: tuple[int, int, int], prompt: dict[str, Any]
                     ) -> list[Step]:
    z = center[2]
    patch = _patch(lease, center)
    if lease.ref.data.get("started"):
        return [Step(StepKind.REFINE, {"slice_index": z, **prompt, **patch})]
    lease.ref.data["started"] = True
    # one task (key slice + propagation): one queue round trip, one version, so undo
    # takes the whole first interaction back
    return [Step(StepKind.SEGMENT, {"slice_index": z, **prompt, **patch})]


def nninteractive_router() -> APIRouter:
    """The nnInteractive v2 routes (mounted under ``/nninteractive``)."""
    r = APIRouter(prefix=PREFIX, tags=["nninteractive"])

    @r.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "server": "segloop", "version": __version__}

    @r.post("/claim", summary="A lease token (503 when all leases are taken)")
    def claim(st: St, who: Who) -> dict[str, Any]:
        s = st.svc.settings
        if len(st.live()) >= s.protocol_max_leases:
            raise AtCapacityError(f"all {s.protocol_max_leases} leases are taken; retry later "
                                  "(SEGLOOP_PROTOCOL_MAX_LEASES raises the cap)")
        token = secrets.token_urlsafe(32)
        st.refs.put(RefKind.NNI_LEASE, lease_key(token), None, who.name,
                    {"dir": uuid.uuid4().hex, "pending": [], "started": False})
        return {"lease_token": token, "idle_timeout_seconds": s.protocol_idle_seconds,
                "liveness_timeout_seconds": s.protocol_liveness_seconds}

    @r.post("/release")
    def release(lease: L) -> dict[str, Any]:
        import shutil

        lease.refs.delete(RefKind.NNI_LEASE, lease.ref.key)
        shutil.rmtree(lease.folder, ignore_errors=True)
        return {"released": True, "job_id": lease.job_id}

    @r.post("/heartbeat")
    def heartbeat(lease: L) -> dict[str, Any]:
        lease.refs.update(lease.ref, beat=True)
        idle = lease.svc.settings.protocol_idle_seconds
        return {"remaining_seconds": max(0.0, idle - lease.ref.idle_seconds())}

    @r.get("/lease_status")
    def lease_status(lease: L) -> dict[str, Any]:
        idle = lease.svc.settings.protocol_idle_seconds
        return {"remaining_seconds": max(0.0, idle - lease.ref.idle_seconds()),
                "idle_timeout_seconds": idle, "job_id": lease.job_id}

    @r.get("/capabilities")
    def capabilities(svc: Svc, who: Who) -> dict[str, Any]:
        return {
            "supported_interactions": {"bbox2d": True, "bbox3d": False, "points": True,
                                       "point": True, "scribbles": False, "scribble": False,
                                       "lasso": False, "initial_seg": True},
            "channel_mapping": {}, "num_interaction_channels": 0,
            "supports_initial_label": True, "supports_zero_shot_label_refinement": False,
            "preferred_scribble_thickness": [1, 1, 1], "interaction_decay": 1.0,
            "inference_session_version": f"segloop-{__version__}",
            "license": f"segloop engine {svc.default_engine()}",
            "supports_undo": True, "do_autozoom": True,
        }

    @r.post("/set_image", summary="The image: packed (C, X, Y, Z) array, spacing in X-Meta")
    async def set_image(request: Request, lease: L) -> dict[str, Any]:
        meta = _meta(request)
        s = lease.svc.settings
        buf = await _body(request, s.max_upload_bytes)
        arr = await run_in_threadpool(nni_array.unpack, buf, 4 * s.max_voxels)
        props = meta.get("image_properties") or {}
        shape = await run_in_threadpool(lease.set_image, arr, props.get("spacing"))
        lease.ref.data["started"] = False
        await run_in_threadpool(lease.ensure_job, None)  # the first box need not wait for it
        return {"original_image_shape": shape}

    @r.post("/set_target_buffer")
    async def set_target_buffer(request: Request, lease: L) -> dict[str, Any]:
        body = await _json(request)
        shape = [int(v) for v in body.get("shape") or []]
        if tuple(shape) != lease.shape():
            raise InputError(f"the target buffer has shape {shape}, the image "
                             f"{list(lease.shape())}")
        dtype = str(body.get("dtype") or "uint8")
        if dtype not in ("bool", "uint8", "int8", "uint16", "int16", "int32", "float16",
                         "float32", "float64"):
            raise InputError(f"target buffer dtype {dtype!r} is not supported")
        lease.ref.data["buffer_dtype"] = dtype
        await run_in_threadpool(lease.save)
        return {"ok": True}

    @r.post("/set_do_autozoom", summary="Off: each interaction changes one patch around it")
    async def set_do_autozoom(request: Request, lease: L) -> dict[str, Any]:
        on = bool((await _json(request)).get("do_autozoom", True))
        lease.ref.data["do_autozoom"] = on
        await run_in_threadpool(lease.save)
        return {"ok": True, "do_autozoom": on}

    @r.post("/reset_interactions", summary="Start over: the next interaction opens a new job")
    async def reset(lease: L) -> dict[str, Any]:
        lease.ref.job_id = None
        lease.ref.data.update(perm=None, pending=[], started=False)
        await run_in_threadpool(lease.save)
        return {"ok": True}

    @r.post("/add_bbox_interaction", summary="A 2D box (one axis one slice thick)")
    async def add_bbox(request: Request, st: St, lease: L) -> Response:
        b = await _json(request)
        try:
            box = [[int(v) for v in pair] for pair in b["bbox_coords"]]
        except (KeyError, TypeError, ValueError):
            raise InputError("bbox_coords must be [[lo, hi], [lo, hi], [lo, hi]]") from None
        if len(box) != 3 or any(len(p) != 2 for p in box):
            raise InputError("bbox_coords must be [[lo, hi], [lo, hi], [lo, hi]]")
        box = [sorted(p) for p in box]
        flat = [a for a in range(3) if box[a][1] - box[a][0] <= 1]
        if len(flat) != 1:
            raise InputError("segloop takes 2D boxes: exactly one axis of bbox_coords must be "
                             "one slice thick (3D boxes are not supported)")
        if not b.get("include_interaction", True):
            raise InputError("negative boxes are not supported: use negative points")

        def make() -> list[Step]:
            lease.ensure_job(flat[0])
            p = lease.perm
            z = box[flat[0]][0]
            canon_box = [box[p[0]][0], box[p[1]][0], box[p[0]][1] - 1, box[p[1]][1] - 1]
            center = ((canon_box[0] + canon_box[2]) // 2, (canon_box[1] + canon_box[3]) // 2, z)
            return _first_or_refine(lease, center, {"box": canon_box})

        return await _predict(st, lease, make, bool(b.get("run_prediction", True)))

    @r.post("/add_point_interaction", summary="A positive or negative click")
    async def add_point(request: Request, st: St, lease: L) -> Response:
        b = await _json(request)
        positive = bool(b.get("include_interaction", True))

        def make() -> list[Step]:
            lease.ensure_job(None)
            x, y, z = lease.to_canonical(b.get("coordinates"))
            if not positive and not lease.ref.data.get("started"):
                raise ConflictError("the first click must be positive (or start with a box)")
            return _first_or_refine(lease, (x, y, z), {"points": [[x, y]],
                                                       "point_labels": [1 if positive else 0]})

        return await _predict(st, lease, make, bool(b.get("run_prediction", True)))

    @r.post("/add_initial_seg_interaction", summary="Start from a segmentation (packed array)")
    async def add_initial_seg(request: Request, lease: L) -> Response:
        meta = _meta(request)
        s = lease.svc.settings
        seg = await run_in_threadpool(nni_array.unpack, await _body(request, s.max_upload_bytes),
                                      s.max_voxels)
        await run_in_threadpool(lease.set_mask, seg)
        lease.ref.data["pending"] = []
        await run_in_threadpool(lease.save)
        if meta.get("run_prediction"):
            return _answer(lease, False, None)  # nothing to predict from a mask alone
        return _answer(lease, False, None)

    @r.post("/predict", summary="Run interactions queued with run_prediction=false")
    async def predict(st: St, lease: L) -> Response:
        return await _predict(st, lease, None, True)

    @r.post("/undo", summary="Back to the mask before the last interaction")
    async def undo(lease: L) -> Response:
        if lease.job_id is None:
            return _answer(lease, False, None)
        before = await run_in_threadpool(lease.buffer_mask)
        try:
            await run_in_threadpool(lease.svc.store.move_current, lease.job_id, lease.who, "undo")
        except ConflictError:
            return _answer(lease, False, None)
        await run_in_threadpool(lease.save)
        return _answer(lease, True, await run_in_threadpool(lease.diff, before))

    @r.post("/add_scribble_interaction")
    @r.post("/add_lasso_interaction")
    def unsupported() -> JSONResponse:
        return JSONResponse({"detail": "scribbles and lassos are not supported by segloop: use "
                                       "boxes and points"}, status_code=422)

    return r


def _meta(request: Request) -> dict[str, Any]:
    raw = request.headers.get(META.lower())
    if not raw:
        return {}
    try:
        meta = json.loads(raw)
    except ValueError:
        raise InputError(f"the {META} header is not JSON") from None
    return meta if isinstance(meta, dict) else {}


async def _body(request: Request, limit: int) -> bytes:
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            from segloop.errors import VolumeTooLargeError

            raise VolumeTooLargeError(f"request body larger than the limit of {limit} bytes")
    return bytes(buf)
