"""The draft routes: unsaved strokes autosaved on the server (:mod:`segloop.jobs.drafts`).

``PUT /api/v1/jobs/{id}/draft?base_version=N`` keeps a label map (NIfTI on the canonical grid,
gzip or not, as ``PUT .../mask`` takes it) as the job's draft; ``GET .../draft`` describes it
(404 when there is none); ``GET .../draft/mask`` returns its labels (gzip NIfTI, canonical
grid); ``POST .../draft/save`` stores it as a normal version and removes it, only while the
version it was painted on is still current (409 otherwise, the draft kept); ``DELETE
.../draft`` discards it. A draft is never a version: it does not appear in ``/versions`` and
undo/redo do not see it. Must not import engines, torch, the worker or the web UI.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from segloop.errors import InputError
from segloop.jobs import drafts, files
from segloop.jobs.errors import ConflictError, NotFoundError

from .deps import Svc, Who
from .schemas import MaskVersionOut
from .upload import read_small_body

__all__ = ["DraftOut", "drafts_router"]


class DraftOut(BaseModel):
    """A job's draft: the version its strokes were painted on, when, by whom, how many
    labelled voxels it holds."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    base_version: int
    saved_at: str
    author: str
    voxels: int


def _out(job_id: str, info: drafts.DraftInfo) -> DraftOut:
    return DraftOut(job_id=job_id, base_version=info.base_version, saved_at=info.saved_at,
                    author=info.author, voxels=info.voxels)


def _none(job_id: str) -> NotFoundError:
    return NotFoundError(f"job {job_id} has no draft (no unsaved strokes were kept)")


def drafts_router() -> APIRouter:
    """The draft routes (a new router per app)."""
    r = APIRouter(prefix="/api/v1/jobs", tags=["drafts"])

    @r.put("/{job_id}/draft", response_model=DraftOut,
           summary="Keep unsaved strokes as the job's draft (NIfTI label map, canonical grid)")
    async def put_draft(job_id: str, request: Request, svc: Svc, who: Who,
                        base_version: Annotated[int | None, Query(ge=0)] = None) -> DraftOut:
        job = await run_in_threadpool(svc.store.get_job, job_id, who)
        data = await read_small_body(request, min(svc.settings.max_upload_bytes,
                                                  svc.settings.max_volume_bytes))
        base = job.current_version if base_version is None else base_version

        def parse_and_keep() -> drafts.DraftInfo:
            if base > 0 and svc.store.version_row(job_id, base) is None:
                raise InputError(f"base_version {base} is not a version of job {job_id}")
            jd = svc.store.job_dir(job_id)
            can = files.load_canonical(jd, job.modality)
            labels = (files.read_mask_upload_2d(data, can) if job.image2d
                      else files.read_mask_upload(data, can, None))
            if tuple(labels.shape) != tuple(job.shape):
                raise InputError(f"the draft has shape {labels.shape}, but this job's volume "
                                 f"is {tuple(job.shape)} (send it on the canonical grid)")
            return drafts.save_draft(jd, labels, base, who.name)

        return _out(job_id, await run_in_threadpool(parse_and_keep))

    @r.get("/{job_id}/draft", response_model=DraftOut, summary="The job's draft (404: none)")
    def get_draft(job_id: str, svc: Svc, who: Who) -> DraftOut:
        svc.store.get_job(job_id, who)
        info = drafts.read_draft_info(svc.store.job_dir(job_id))
        if info is None:
            raise _none(job_id)
        return _out(job_id, info)

    @r.get("/{job_id}/draft/mask", summary="The draft's label map (gzip NIfTI, canonical grid)")
    def get_draft_mask(job_id: str, svc: Svc, who: Who) -> Response:
        import gzip

        import nibabel as nib

        svc.store.get_job(job_id, who)
        jd = svc.store.job_dir(job_id)
        got = drafts.load_draft(jd)
        if got is None:
            raise _none(job_id)
        info, labels = got
        can: Any = nib.load(str(files.canonical_path(jd)))
        body = gzip.compress(nib.Nifti1Image(labels, can.affine).to_bytes(), compresslevel=1)
        return Response(body, media_type="application/gzip",
                        headers={"X-Draft-Base-Version": str(info.base_version)})

    @r.post("/{job_id}/draft/save", response_model=MaskVersionOut,
            summary="Store the draft as a new version (then it is gone); 409 when the "
                    "version it was painted on is no longer current")
    def save_draft(job_id: str, svc: Svc, who: Who) -> MaskVersionOut:
        svc.store.get_job(job_id, who)
        jd = svc.store.job_dir(job_id)
        got = drafts.load_draft(jd)
        if got is None:
            raise _none(job_id)
        info, labels = got
        try:  # a draft painted on an older version would silently undo the newer ones
            n = svc.store.edit_mask(job_id, who, labels, source="draft",
                                    expect_version=info.base_version)
        except ConflictError as e:
            raise ConflictError(
                f"{e}; the draft is kept: GET .../draft/mask, apply its strokes to the "
                f"current version and PUT .../mask, or DELETE .../draft") from None
        drafts.drop_draft(jd)
        svc.bus.publish(job_id, {"type": "version", "job_id": job_id, "version": n,
                                 "source": "draft"})
        return MaskVersionOut(job_id=job_id, version=n)

    @r.delete("/{job_id}/draft", status_code=204, summary="Discard the job's draft")
    def delete_draft(job_id: str, svc: Svc, who: Who) -> Response:
        svc.store.get_job(job_id, who)
        drafts.drop_draft(svc.store.job_dir(job_id))
        return Response(status_code=204)

    return r
