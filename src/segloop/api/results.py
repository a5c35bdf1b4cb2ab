"""The mask exports of ``GET /api/v1/jobs/{job_id}/result``, one function per format.

A mask version is stored on the canonical (RAS) grid; exports go back to the uploaded grid
with the same writers ``segloop segment`` uses (:func:`segloop.io.save_mask`,
:func:`segloop.io.write_dicom_seg`), or stay on the canonical grid (the viewer's), or render
one slice as PNG. Blocking work runs in Starlette's thread pool. Must not import routes,
engines, torch, the worker or the web UI.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

import numpy.typing as npt
from fastapi.responses import FileResponse, Response
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from segloop.errors import InputError
from segloop.jobs import files
from segloop.jobs.errors import ConflictError
from segloop.jobs.records import JobRecord
from segloop.jobs.store import Principal

from .deps import Services

__all__ = ["ResultFormat", "ResultGrid", "ResultStyle", "result_response"]

ResultFormat = Literal["nii.gz", "png", "dicom-seg"]
ResultStyle = Literal["colour", "labels"]
ResultGrid = Literal["source", "canonical"]


def _canonical_nifti(svc: Services, job_id: str, labels: npt.NDArray[Any]) -> bytes:
    """The label map on the canonical grid (GET .../volume's), gzipped NIfTI bytes."""
    import gzip

    import nibabel as nib

    can: Any = nib.load(str(files.canonical_path(svc.store.job_dir(job_id))))
    img = nib.Nifti1Image(labels, can.affine)
    return gzip.compress(img.to_bytes(), compresslevel=1)


async def result_response(svc: Services, who: Principal, job_id: str, job: JobRecord,
                          labels: npt.NDArray[Any], n: int, format: ResultFormat,
                          slice_index: int | None, style: ResultStyle, grid: ResultGrid,
                          series_description: str | None = None) -> Response:
    """The response for version ``n`` (``labels``) of ``job`` in ``format``; ConflictError
    for a DICOM-SEG of a non-DICOM upload or of an empty mask. ``series_description``: the
    DICOM-SEG's SeriesDescription."""
    headers = {"X-Mask-Version": str(n)}
    if job.image2d:
        return await _result_2d(svc, who, job_id, job, labels, n, format, style, headers)
    if format == "nii.gz" and grid == "canonical":  # the viewer's grid (GET .../volume)
        body = await run_in_threadpool(_canonical_nifti, svc, job_id, labels)
        return Response(body, media_type="application/gzip", headers=headers)
    if format == "png":
        from .render import slice_png

        if slice_index is None:
            raise InputError("format=png needs slice_index")
        objs = svc.store.list_objects(job_id, who)
        data = slice_png(labels, slice_index, objs, style)
        return Response(data, media_type="image/png", headers=headers)
    out = svc.settings.tmp_dir / f"result-{uuid.uuid4()}"
    if format == "nii.gz":
        from segloop.io import save_mask

        vol = await run_in_threadpool(svc.source_volume, job)
        path = out.with_suffix(".nii.gz")
        await run_in_threadpool(save_mask, labels, vol, path)
        return FileResponse(path, media_type="application/gzip",
                            filename=f"{job_id}_v{n}_mask.nii.gz",
                            background=BackgroundTask(lambda: path.unlink(missing_ok=True)),
                            headers=headers)
    if job.source_format != "dicom":
        raise ConflictError("DICOM-SEG export needs a DICOM upload; this job came from "
                            f"{job.source_format} (download format=nii.gz instead)")
    if n == 0 or not labels.any():
        raise ConflictError("the mask is empty: nothing to export as DICOM-SEG")
    from segloop.io import write_dicom_seg

    vol = await run_in_threadpool(svc.source_volume, job)
    objs = svc.store.list_objects(job_id, who)
    segs = {o.label_value: o.name for o in objs}
    path = out.with_suffix(".dcm")
    await run_in_threadpool(write_dicom_seg, labels, vol, path, segs, series_description)
    return FileResponse(path, media_type="application/dicom",
                        filename=f"{job_id}_v{n}_seg.dcm",
                        background=BackgroundTask(lambda: path.unlink(missing_ok=True)),
                        headers=headers)


async def _result_2d(svc: Services, who: Principal, job_id: str, job: JobRecord,
                     labels: npt.NDArray[Any], n: int, format: ResultFormat,
                     style: ResultStyle, headers: dict[str, str]) -> Response:
    """A 2D job's mask at the picture's exact size: PNG (``style`` colour: RGBA overlay,
    labels: grey label values), NIfTI (the one-slice canonical grid, x = column, y = row) or
    DICOM-SEG (a single-frame DICOM upload; one segment per object)."""
    from segloop.jobs import image2d_job

    if format == "nii.gz":
        body = await run_in_threadpool(_canonical_nifti, svc, job_id, labels)
        return Response(body, media_type="application/gzip", headers={
            **headers, "Content-Disposition": f'attachment; filename="{job_id}_v{n}_mask.nii.gz"'})
    image = await run_in_threadpool(image2d_job.load_job_image, svc.store.job_dir(job_id),
                                    svc.settings.max_voxels)
    assert image is not None  # image2d jobs have their picture
    objs = svc.store.list_objects(job_id, who)
    if format == "png":
        colours = {o.label_value: o.colour for o in objs} \
            if style == "colour" else None
        data = await run_in_threadpool(image2d_job.result_png, labels, image, colours)
        return Response(data, media_type="image/png", headers=headers)
    if job.source_format != image2d_job.FORMAT_PREFIX + "dicom":
        raise ConflictError("DICOM-SEG export needs a DICOM upload; this job came from "
                            f"{job.source_format[3:].upper()} (download format=png instead)")
    if n == 0 or not labels.any():
        raise ConflictError("the mask is empty: nothing to export as DICOM-SEG")
    names = {o.label_value: o.name for o in objs}
    path = (svc.settings.tmp_dir / f"result-{uuid.uuid4()}").with_suffix(".dcm")
    await run_in_threadpool(image2d_job.result_dicom_seg, labels, image, path, names)
    return FileResponse(path, media_type="application/dicom", filename=f"{job_id}_v{n}_seg.dcm",
                        background=BackgroundTask(lambda: path.unlink(missing_ok=True)),
                        headers=headers)
