"""The ``/api/v1/jobs`` routes: upload, prompt, propagate, correct, review, export.

Routes are thin: validate the request, call the job store (or submit a task to the queue),
return. Engine work never runs in a handler; anything slow goes to Starlette's thread pool.
Must not import engines, torch, the worker or the web UI.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from segloop.errors import InputError
from segloop.jobs import files
from segloop.jobs.errors import ConflictError, NotFoundError, QueueUnavailableError
from segloop.jobs.records import (
    JobRecord,
    JobStatus,
    ObjectRecord,
    ReviewRecord,
    TaskRecord,
    VersionRecord,
)
from segloop.jobs.recovery import discard_unsent
from segloop.jobs.states import EventType
from segloop.jobs.store import Principal

from .deps import Services, Svc, Who
from .limits import Coord, ObjectId, SeriesDescription, Version, check_points
from .results import ResultFormat, ResultGrid, ResultStyle, result_response
from .schemas import (
    CancelOut,
    CurrentVersionOut,
    InitialMaskRequest,
    MaskVersionOut,
    ObjectRequest,
    PropagateRequest,
    RefineRequest,
    ReviewRequest,
    SubmittedOut,
)
from .sse import event_stream
from .upload import read_small_body, receive_upload

__all__ = ["jobs_router"]


def _submit(svc: Svc, who: Principal, job_id: str, kind: str, params: dict[str, Any]
            ) -> SubmittedOut:
    t = _submit_task(svc, who, job_id, kind, params)
    return SubmittedOut(task_id=t.task_id, job_id=job_id, kind=kind, state=t.state,
                        events=f"/api/v1/jobs/{job_id}/events?task_id={t.task_id}")


def _submit_task(svc: Svc, who: Principal, job_id: str, kind: str, params: dict[str, Any]
                 ) -> TaskRecord:
    """Record a task and hand it to the queue; its record (queued)."""
    check_points(params.get("points"), params.get("point_labels"), svc.settings.max_points)
    first, last = params.get("first_slice"), params.get("last_slice")
    if first is not None and last is not None and first > last:
        raise InputError(f"first_slice {first} is after last_slice {last}")
    params = {**params, "engine": params.get("engine") or svc.default_engine()}
    known = svc.engine_names()
    if params["engine"] not in known:
        known = svc.engine_names(refresh=True)
    t = svc.store.create_task(job_id, kind, params, who, known)
    try:
        svc.queue.submit(t.task_id, t.job_id)
    except QueueUnavailableError:  # 503, and the store forgets the task: nothing waits on it
        discard_unsent(svc.store, t.task_id)
        raise
    svc.bus.publish(job_id, {**t.as_dict(), "type": EventType.QUEUED.value})
    svc.metrics.tasks_submitted.labels(kind=kind).inc()
    return t


def _sse_response(svc: Svc, sub: Any, job_id: str, who: Principal, task_id: str | None,
                  request: Request, first: JobStatus | TaskRecord) -> StreamingResponse:
    return StreamingResponse(event_stream(svc, sub, job_id, who, task_id, request, first),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _submit_or_stream(request: Request, svc: Svc, who: Principal, job_id: str, kind: str,
                            params: dict[str, Any]) -> SubmittedOut | StreamingResponse:
    """202 and the task's record; or, when the client accepts ``text/event-stream``, the
    task's events in the response itself (as ``GET .../events?task_id=``): one request per
    step instead of two, and no read of the task the handler has just recorded."""
    if "text/event-stream" not in request.headers.get("accept", ""):
        return await run_in_threadpool(_submit, svc, who, job_id, kind, params)
    sub = await svc.bus.subscribe(job_id)  # before the task exists: nothing slips through
    try:
        t = await run_in_threadpool(_submit_task, svc, who, job_id, kind, params)
    except BaseException:
        await sub.close()
        raise
    return _sse_response(svc, sub, job_id, who, t.task_id, request, t)



def name_objects(svc: Services, who: Principal, job_id: str, names: dict[int, str]) -> None:
    """Give objects still named by default (``object N``) the names of an imported mask's
    segments (label value -> name)."""
    for o in svc.store.list_objects(job_id, who):
        name = names.get(o.label_value, "").strip()
        if name and o.name == f"object {o.object_id}":
            svc.store.upsert_object(job_id, who, o.object_id, name[:64], None, None)


def jobs_router() -> APIRouter:
    """The jobs routes (a new router per app)."""
    r = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])

    @r.post("", status_code=201, response_model=JobRecord,
            summary="Upload a volume (multipart file field 'file')")
    async def upload(request: Request, svc: Svc, who: Who) -> JobRecord:
        svc.ingest.warm()  # the reader process starts while the bytes arrive
        path, filename = await receive_upload(request, svc.settings.tmp_dir,
                                              svc.settings.max_upload_bytes)
        return await run_in_threadpool(svc.store.create_job, path, filename, who, svc.ingest)

    @r.get("", response_model=list[JobRecord], summary="The caller's jobs")
    def list_jobs(svc: Svc, who: Who, all_users: bool = False) -> list[JobRecord]:
        return svc.store.list_jobs(who, all_users)

    @r.get("/{job_id}", response_model=JobRecord)
    def get_job(job_id: str, svc: Svc, who: Who) -> JobRecord:
        return svc.store.get_job(job_id, who)

    @r.delete("/{job_id}", status_code=204)
    def delete_job(job_id: str, svc: Svc, who: Who) -> Response:
        svc.store.delete_job(job_id, who)
        return Response(status_code=204)

    @r.get("/{job_id}/volume", summary="The closest-canonical RAS volume (NIfTI); "
           "preview=true: a subsampled copy of a large one (404 when it has none)")
    def volume(job_id: str, svc: Svc, who: Who, preview: bool = False) -> FileResponse:
        svc.store.get_job(job_id, who)
        jd = svc.store.job_dir(job_id)
        if preview:
            prev = files.preview_path(jd)  # uncompressed .nii (.nii.gz for an older job)
            if not prev.is_file():
                raise NotFoundError(f"job {job_id} has no preview (its volume is small)")
            pgz = prev.name.endswith(".gz")
            return FileResponse(prev, media_type="application/gzip" if pgz else
                                "application/octet-stream",
                                filename=f"{job_id}_preview.nii{'.gz' if pgz else ''}")
        svc.store.audit(who.name, "download-volume", job_id)
        path = files.canonical_path(jd)  # uncompressed .nii (.nii.gz for an older job)
        gz = path.name.endswith(".gz")
        return FileResponse(path, media_type="application/gzip" if gz else
                            "application/octet-stream",
                            filename=f"{job_id}.nii{'.gz' if gz else ''}")

    @r.get("/{job_id}/image", summary="A 2D job's picture as the viewer shows it (8-bit PNG)")
    def image(job_id: str, svc: Svc, who: Who) -> FileResponse:
        from segloop.jobs.image2d_job import DISPLAY_NAME

        job = svc.store.get_job(job_id, who)
        if not job.image2d:
            raise ConflictError("this job is a volume, not a 2D image: GET .../volume")
        return FileResponse(svc.store.job_dir(job_id) / DISPLAY_NAME, media_type="image/png")

    # each step: 202 and the task (then GET its events), or with ``Accept: text/event-stream``
    # 200 and the task's event stream itself (status first, then until done/failed/cancelled)
    @r.post("/{job_id}/initial-mask", status_code=202, response_model=SubmittedOut)
    async def initial_mask(job_id: str, body: InitialMaskRequest, request: Request, svc: Svc,
                           who: Who) -> SubmittedOut | StreamingResponse:
        return await _submit_or_stream(request, svc, who, job_id, "initial-mask",
                                       body.model_dump())

    @r.post("/{job_id}/propagate", status_code=202, response_model=SubmittedOut)
    async def propagate(job_id: str, request: Request, svc: Svc, who: Who,
                        body: PropagateRequest | None = None) -> SubmittedOut | StreamingResponse:
        return await _submit_or_stream(request, svc, who, job_id, "propagate",
                                       (body or PropagateRequest()).model_dump())

    @r.post("/{job_id}/refine", status_code=202, response_model=SubmittedOut)
    async def refine(job_id: str, body: RefineRequest, request: Request, svc: Svc, who: Who
                     ) -> SubmittedOut | StreamingResponse:
        return await _submit_or_stream(request, svc, who, job_id, "refine", body.model_dump())

    @r.post("/{job_id}/cancel", response_model=CancelOut)
    def cancel(job_id: str, svc: Svc, who: Who, task_id: str | None = None) -> CancelOut:
        return CancelOut(cancel_requested=svc.store.cancel_task(job_id, who, task_id))

    @r.get("/{job_id}/status", response_model=JobStatus)
    def status(job_id: str, svc: Svc, who: Who) -> JobStatus:
        return svc.store.job_status(job_id, who)

    @r.get("/{job_id}/tasks/{task_id}", response_model=TaskRecord)
    def task(job_id: str, task_id: str, svc: Svc, who: Who) -> TaskRecord:
        return svc.store.task_for(job_id, task_id, who)

    @r.get("/{job_id}/events", summary="Server-Sent Events: progress and completion")
    async def events(job_id: str, request: Request, svc: Svc, who: Who,
                     task_id: str | None = None) -> StreamingResponse:
        """Pushes ``status`` first, then every event of the job. With ``task_id`` the stream
        ends after that task's terminal event (done / failed / cancelled)."""
        sub = await svc.bus.subscribe(job_id)  # before reading the state: nothing slips through
        first: JobStatus | TaskRecord
        try:
            if task_id is None:
                first = await run_in_threadpool(svc.store.job_status, job_id, who)
            else:
                first = await run_in_threadpool(svc.store.task_for, job_id, task_id, who)
        except BaseException:
            await sub.close()
            raise
        return _sse_response(svc, sub, job_id, who, task_id, request, first)

    @r.get("/{job_id}/result", summary="The mask: nii.gz (uploaded grid), png (a slice), dicom-seg")
    async def result(job_id: str, svc: Svc, who: Who,
                     format: ResultFormat = "nii.gz",
                     slice_index: Coord | None = None, version: Version | None = None,
                     style: ResultStyle = "colour", grid: ResultGrid = "source",
                     series_description: SeriesDescription | None = None) -> Response:
        job = await run_in_threadpool(svc.store.get_job, job_id, who)
        labels, n = await run_in_threadpool(svc.store.labels, job_id, who, version)
        await run_in_threadpool(svc.store.audit, who.name, "download-result", job_id,
                                format=format, version=n, grid=grid, slice_index=slice_index)
        return await result_response(svc, who, job_id, job, labels, n, format, slice_index,
                                     style, grid, series_description)

    @r.put("/{job_id}/mask", response_model=MaskVersionOut,
           summary="Upload an edited label map (NIfTI, canonical or source grid; "
                 "a 2D job also takes a PNG of the picture's size) or a DICOM-SEG")
    async def put_mask(job_id: str, request: Request, svc: Svc, who: Who,
                       base_version: Version | None = None) -> MaskVersionOut:
        """``base_version``: the version the label map was made on; when another version is
        current by the time it is stored, 409 and nothing is stored (without it, the upload
        simply becomes the newest version)."""
        job = await run_in_threadpool(svc.store.get_job, job_id, who)
        data = await read_small_body(request, min(svc.settings.max_upload_bytes,
                                                  svc.settings.max_volume_bytes))

        def parse_and_store() -> int:
            can = files.load_canonical(svc.store.job_dir(job_id), job.modality)
            if files.is_dicom(data) and not job.image2d:  # a DICOM-SEG: placed by position
                labels, names = files.read_seg_upload(data, can, svc.settings.tmp_dir,
                                                      svc.source_volume(job))
                n = svc.store.edit_mask(job_id, who, labels, source="import:dicom-seg",
                                        expect_version=base_version)
                name_objects(svc, who, job_id, names)
                return n
            if job.image2d:  # a PNG of the picture's size, or the canonical NIfTI
                labels = files.read_mask_upload_2d(data, can)
                return svc.store.edit_mask(job_id, who, labels, expect_version=base_version)
            src = None if job.source_shape == job.shape and can.is_canonical() and \
                job.source_format == "nifti" else svc.source_volume(job)
            labels = files.read_mask_upload(data, can, src)
            return svc.store.edit_mask(job_id, who, labels, expect_version=base_version)

        n = await run_in_threadpool(parse_and_store)
        svc.bus.publish(job_id, {"type": "version", "job_id": job_id, "version": n,
                                 "source": "edit"})
        return MaskVersionOut(job_id=job_id, version=n)

    @r.get("/{job_id}/versions", response_model=list[VersionRecord])
    def versions(job_id: str, svc: Svc, who: Who) -> list[VersionRecord]:
        return svc.store.list_versions(job_id, who)

    @r.post("/{job_id}/undo", response_model=CurrentVersionOut)
    def undo(job_id: str, svc: Svc, who: Who) -> CurrentVersionOut:
        n = svc.store.move_current(job_id, who, "undo")
        svc.bus.publish(job_id, {"type": "version", "job_id": job_id, "version": n})
        return CurrentVersionOut(job_id=job_id, current_version=n)

    @r.post("/{job_id}/redo", response_model=CurrentVersionOut)
    def redo(job_id: str, svc: Svc, who: Who) -> CurrentVersionOut:
        n = svc.store.move_current(job_id, who, "redo")
        svc.bus.publish(job_id, {"type": "version", "job_id": job_id, "version": n})
        return CurrentVersionOut(job_id=job_id, current_version=n)

    @r.post("/{job_id}/review", response_model=ReviewRecord)
    def review(job_id: str, svc: Svc, who: Who, body: ReviewRequest | None = None
               ) -> ReviewRecord:
        return svc.store.review(job_id, who, (body or ReviewRequest()).version)

    @r.get("/{job_id}/objects", response_model=list[ObjectRecord])
    def objects(job_id: str, svc: Svc, who: Who) -> list[ObjectRecord]:
        return svc.store.list_objects(job_id, who)

    @r.post("/{job_id}/objects", status_code=201, response_model=ObjectRecord)
    def add_object(job_id: str, body: ObjectRequest, svc: Svc, who: Who) -> ObjectRecord:
        return svc.store.upsert_object(job_id, who, None, body.name, body.colour,
                                       body.label_value)

    @r.patch("/{job_id}/objects/{object_id}", response_model=ObjectRecord)
    def edit_object(job_id: str, object_id: ObjectId, body: ObjectRequest, svc: Svc, who: Who
                    ) -> ObjectRecord:
        return svc.store.upsert_object(job_id, who, object_id, body.name, body.colour,
                                       body.label_value)

    return r
