"""The mask editing routes: ``POST /api/v1/jobs/{id}/edit``, ``GET .../measurements`` and
``GET /api/v1/terminology`` (the structures objects are named by, for DICOM-SEG codes).

Thin: each edit reads the job's current label map, applies one operation of
:mod:`segloop.edit` to one object and stores the result as a new mask version (source
``edit:<op>``), so Undo goes back to the version before it. An edit that changes nothing
stores nothing. Must not import engines, torch, the worker or the web UI.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from segloop.edit.measure import ObjectMeasure, measure, measures_csv
from segloop.edit.regions import clear_slices, keep_slices, remove_islands, remove_region
from segloop.edit.shape import fill_between, smooth
from segloop.errors import InputError
from segloop.jobs import files
from segloop.jobs.errors import ConflictError, NotFoundError
from segloop.jobs.records import ObjectRecord
from segloop.types import Plane

from .deps import Services, Svc, Who
from .limits import Coord, ObjectId, Version

__all__ = ["EditOp", "EditOut", "EditRequest", "MeasureOut", "StructureOut", "edit_router"]


class EditOp(StrEnum):
    """What an edit does to one object."""

    CLEAR_SLICES = "clear-slices"  # clear it on slices first..last (from here up / down)
    KEEP_SLICES = "keep-slices"  # clear it outside first..last
    REMOVE_REGION = "remove-region"  # the connected region under `point` (2D, or 3D)
    REMOVE_ISLANDS = "remove-islands"  # connected parts under min_voxels
    SMOOTH = "smooth"  # Gaussian smoothing, kernel_mm wide
    FILL_BETWEEN = "fill-between"  # interpolate the empty slices between drawn ones
    CLEAR_OBJECT = "clear-object"  # every voxel of it (the object record stays)


class EditRequest(BaseModel):
    """One edit of one object of the current mask version."""

    model_config = ConfigDict(strict=True)  # "5" is not an int, 1.0 not a bool

    op: Annotated[EditOp, Field(strict=False)]
    object_id: ObjectId = 1
    first_slice: Coord | None = None
    last_slice: Coord | None = None
    point: list[Coord] | None = Field(None, min_length=3, max_length=3,
                                      description="[x, y, z] canonical voxel (remove-region)")
    axis: Literal["axial", "coronal", "sagittal"] = Field(
        "axial", description="the plane whose slices first_slice/last_slice count, and the "
        "plane of a 2D remove-region and of fill-between's slices")
    three_d: bool = False
    min_voxels: int = Field(50, ge=1, le=2**31 - 1)
    kernel_mm: float = Field(3.0, gt=0, le=100)
    base_version: Version | None = Field(
        None, description="the version the edit was made on; 409 when it is no longer current")


class EditOut(BaseModel):
    """The version now current and how many voxels the edit changed (0: no new version)."""

    job_id: str
    version: int
    changed: int
    op: str


class MeasureOut(BaseModel):
    """One object's measurements on the canonical grid (voxel indices inclusive)."""

    model_config = ConfigDict(extra="allow")

    label_value: int
    object_id: int | None
    name: str
    voxels: int
    volume_ml: float
    slices: int
    bbox_min: list[int] | None
    bbox_max: list[int] | None
    extent_mm: list[float] | None


class StructureOut(BaseModel):
    """A structure a segment can be coded as (SNOMED CT, from pydicom's code dictionary)."""

    meaning: str
    code: str
    scheme: str = "SCT"
    category: str
    keyword: str


def _spacing(svc: Services, job_id: str) -> tuple[float, float, float]:
    """Voxel size (mm) of the canonical volume, from its header."""
    import nibabel as nib

    img: Any = nib.load(str(files.canonical_path(svc.store.job_dir(job_id))))
    z = img.header.get_zooms()
    return float(z[0]), float(z[1]), float(z[2])


def _apply(body: EditRequest, labels: np.ndarray[Any, Any], lv: int,
           spacing: tuple[float, float, float]) -> tuple[np.ndarray[Any, Any], int]:
    """The new label map and the voxels changed; slices are those of the request's plane
    (the operation runs on the plane's view of the label map, the slice axis last)."""
    plane = Plane(body.axis)
    if plane is Plane.AXIAL:
        return _apply_axial(body, labels, lv, spacing)
    o = plane.order
    point = None if body.point is None else [body.point[k] for k in o]
    new, changed = _apply_axial(body.model_copy(update={"point": point}),
                                np.ascontiguousarray(plane.to_view(labels)), lv,
                                (spacing[o[0]], spacing[o[1]], spacing[o[2]]))
    return np.ascontiguousarray(plane.from_view(new)), changed


def _apply_axial(body: EditRequest, labels: np.ndarray[Any, Any], lv: int,
                 spacing: tuple[float, float, float]) -> tuple[np.ndarray[Any, Any], int]:
    """:func:`_apply` with the slice axis last."""
    op = body.op
    nz = labels.shape[2]
    if op in (EditOp.CLEAR_SLICES, EditOp.KEEP_SLICES):
        if body.first_slice is None and body.last_slice is None:
            raise InputError(f"{op.value} needs first_slice and/or last_slice")
        first = 0 if body.first_slice is None else body.first_slice
        last = nz - 1 if body.last_slice is None else body.last_slice
        new = (clear_slices(labels, lv, first, last) if op == EditOp.CLEAR_SLICES
               else keep_slices(labels, lv, first, last))
        return new, int((new != labels).sum())
    if op == EditOp.REMOVE_REGION:
        if body.point is None:
            raise InputError("remove-region needs point: [x, y, z]")
        p = body.point
        return remove_region(labels, lv, (p[0], p[1], p[2]), three_d=body.three_d)
    if op == EditOp.REMOVE_ISLANDS:
        return remove_islands(labels, lv, body.min_voxels, three_d=True)
    if op == EditOp.SMOOTH:
        return smooth(labels, lv, spacing, body.kernel_mm)
    if op == EditOp.FILL_BETWEEN:
        return fill_between(labels, lv, spacing[:2], body.first_slice, body.last_slice)
    new = labels.copy()
    new[new == lv] = 0
    return new, int((labels == lv).sum())


def _check_base(base_version: int | None, current: int) -> None:
    """Raise :class:`ConflictError` when the edit was made on a version other than
    ``current`` (no check when the request names no ``base_version``)."""
    if base_version is not None and base_version != current:
        raise ConflictError(f"the mask changed (version {current} is current, the edit was made"
                            f" on {base_version}): reload and try again")


def edit_router() -> APIRouter:
    """The editing routes (a new router per app)."""
    r = APIRouter(tags=["jobs"])

    @r.post("/api/v1/jobs/{job_id}/edit", response_model=EditOut,
            summary="Apply one mask operation to one object; a new version when it changes")
    async def edit(job_id: str, body: EditRequest, svc: Svc, who: Who) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            st = svc.store.job_status(job_id, who)
            if st.active_tasks:
                raise ConflictError("a task is still running on this job; wait or cancel it")
            _check_base(body.base_version, st.current_version)
            objs = {o.object_id: o for o in svc.store.list_objects(job_id, who)}
            if body.object_id not in objs:
                raise NotFoundError(f"job {job_id} has no object {body.object_id}")
            labels, n = svc.store.labels(job_id, who)
            # a version stored between the check above and this read is not the one the edit
            # was made on either: applying it there would merge the two (409 instead)
            _check_base(body.base_version, n)
            new, changed = _apply(body, labels, objs[body.object_id].label_value,
                                  _spacing(svc, job_id))
            if changed == 0:
                return {"job_id": job_id, "version": n, "changed": 0, "op": body.op.value}
            # stored only if version n (what the edit was applied to) is still current: an
            # edit stored meanwhile is not undone by this one (409 instead)
            v = svc.store.edit_mask(job_id, who, new, source=f"edit:{body.op.value}",
                                    expect_version=n)
            return {"job_id": job_id, "version": v, "changed": changed, "op": body.op.value}

        out = await run_in_threadpool(run)
        if out["changed"]:
            svc.bus.publish(job_id, {"type": "version", "job_id": job_id,
                                     "version": out["version"], "source": f"edit:{out['op']}"})
        return out

    @r.get("/api/v1/jobs/{job_id}/measurements", response_model=list[MeasureOut],
           summary="Per-object voxel count, volume (mL) and extent; format=csv for a file")
    async def measurements(job_id: str, svc: Svc, who: Who, version: Version | None = None,
                           format: Literal["json", "csv"] = "json") -> Any:
        def run() -> tuple[list[ObjectMeasure], list[ObjectRecord], int]:
            labels, n = svc.store.labels(job_id, who, version)
            objs = svc.store.list_objects(job_id, who)
            return measure(labels, _spacing(svc, job_id),
                           [o.label_value for o in objs]), objs, n

        rows, objs, n = await run_in_threadpool(run)
        by_value = {o.label_value: o for o in objs}
        names = {v: o.name for v, o in by_value.items()}
        if format == "csv":
            return Response(measures_csv(rows, names), media_type="text/csv", headers={
                "X-Mask-Version": str(n),
                "Content-Disposition": f'attachment; filename="{job_id}_v{n}_measurements.csv"'})
        return [{"label_value": m.label_value,
                 "object_id": by_value[m.label_value].object_id if m.label_value in by_value
                 else None, "name": names.get(m.label_value, ""), "voxels": m.voxels,
                 "volume_ml": m.volume_ml, "slices": m.slices,
                 "bbox_min": list(m.bbox_min) if m.bbox_min else None,
                 "bbox_max": list(m.bbox_max) if m.bbox_max else None,
                 "extent_mm": list(m.extent_mm) if m.extent_mm else None} for m in rows]

    @r.get("/api/v1/terminology", response_model=list[StructureOut], tags=["system"],
           summary="Structures to name objects by (their DICOM-SEG segments get the code)")
    def terminology(who: Who, q: Annotated[str, Field(max_length=64)] = "",
                    limit: Annotated[int, Field(ge=1, le=500)] = 60) -> list[dict[str, Any]]:
        from segloop.io.terminology import search_structures

        return [{"meaning": s.meaning, "code": s.code, "category": s.category,
                 "keyword": s.keyword} for s in search_structures(q, limit)]

    return r
