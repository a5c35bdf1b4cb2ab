"""One MONAI Label ``/infer`` call: clicks and ROI in file indices -> segloop tasks -> result file.

MONAI Label clients send every click of the current segment with each call. segloop keeps
what the previous call of this (job, object) sent (a ``ml-prompts`` ref): when the new call
only adds clicks, with the same ROI, model and job version, just the new clicks run (as
refinements, what segloop's engines are built for); otherwise the object is cleared and
segmented afresh in ONE ``segment`` task (one queue round trip, one version, one undo; see
:mod:`segloop.jobs.segmentstep`): the erase, the ROI's box and the clicks on the anchor slice,
propagation, then one refinement per other clicked slice, in the worker's cached engine
session. With a ROI no step may
change the object outside it (a task param the worker applies) and the object starts empty
or inside it, so the stored version is what the client gets back: the object's mask, inside
the ROI, on the uploaded file's grid. Imports jobs, io and the
protocol helpers; never engines or torch.
Must not import segloop.cli (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from starlette.concurrency import run_in_threadpool

from segloop.api.app import Services
from segloop.errors import InputError
from segloop.io.volume import Volume
from segloop.jobs.records import JobRecord
from segloop.jobs.store import Principal

from . import ml_geometry as geo
from .refs import Ref, RefKind, RefStore
from .tasks import Step, StepKind, run_steps_building

__all__ = ["InferResult", "run_infer"]


@dataclass(frozen=True)
class InferResult:
    """The result file (under the service's tmp folder; the caller removes it) and the JSON
    params MONAI Label returns beside it."""

    path: Path
    params: dict[str, Any]


def _object_for(svc: Services, who: Principal, job_id: str, label: Any) -> tuple[int, int]:
    """(object id, label value) of the object named ``label`` (created when new); object 1
    when no name is given (its label value read alone: no object list, no anchor planes)."""
    if not label:
        return 1, svc.store.object_labels(job_id).get(1, 1)
    objs = svc.store.list_objects(job_id, who)
    for o in objs:
        if o.name == str(label):
            return o.object_id, o.label_value
    if objs == [] or (len(objs) == 1 and objs[0].name == "object 1"
                      and not svc.store.version_row(job_id)):
        new = svc.store.upsert_object(job_id, who, 1, str(label)[:100], None, None)
    else:
        new = svc.store.upsert_object(job_id, who, None, str(label)[:100], None, None)
    return new.object_id, new.label_value


def _points(vol: Any, p: dict[str, Any], key: str) -> list[tuple[int, int, int]]:
    raw = p.get(key) or []
    if not isinstance(raw, list):
        raise InputError(f"{key} must be a list of [i, j, k] voxel indices")
    return [geo.to_canonical(vol, pt) for pt in raw]


async def run_infer(svc: Services, refs: RefStore, who: Principal,
                    resolve: Callable[[], JobRecord], engine: str, three_d: bool,
                    p: dict[str, Any]) -> InferResult:
    """Run a deepgrow request ``p`` (``foreground``, ``background``, ``roi`` in the file's voxel
    indices, ``label``, ``reset_state``, ``result_extension``, ``result_dtype``,
    ``result_compress``) on the job ``resolve`` returns (it checks access; called once, in
    the first thread-pool hop).

    The result file is built from the label map the embedded worker offers before its
    durable write (:mod:`segloop.jobs.handoff`), while the version's file and folder are
    flushed; the answer still waits for the task's ``done`` event (after the commit). With
    no offer (other workers) the stored version is read back instead."""
    t0 = time.perf_counter()

    def read() -> tuple[JobRecord, Volume, int, int, Ref | None]:  # one thread-pool hop
        job = resolve()
        vol = svc.source_volume(job)
        oid, value = _object_for(svc, who, job.job_id, p.get("label"))
        return job, vol, oid, value, refs.get(RefKind.ML_PROMPTS, f"{job.job_id}:{oid}")

    job, vol, oid, value, prev = await run_in_threadpool(read)
    job_id = job.job_id
    fg, bg = _points(vol, p, "foreground"), _points(vol, p, "background")
    roi = geo.roi_to_canonical(vol, p["roi"]) if p.get("roi") else None
    key = f"{job_id}:{oid}"
    mine = {"engine": engine, "three_d": three_d,
            "roi": None if roi is None else [list(roi.lo), list(roi.hi)],
            "fg": [list(x) for x in fg], "bg": [list(x) for x in bg]}
    steps: list[Step]
    old_fg = [tuple(x) for x in prev.data.get("fg", [])] if prev else []
    old_bg = [tuple(x) for x in prev.data.get("bg", [])] if prev else []
    if (prev is not None and three_d and not p.get("reset_state")
            and prev.data.get("version") == job.current_version
            and all(prev.data.get(k) == mine[k] for k in ("engine", "three_d", "roi"))
            and fg[: len(old_fg)] == old_fg and bg[: len(old_bg)] == old_bg):
        new_fg, new_bg = fg[len(old_fg):], bg[len(old_bg):]
        steps = []
        for z in sorted({q[2] for q in new_fg + new_bg}):
            pts = [[q[0], q[1]] for q in new_fg if q[2] == z] + \
                  [[q[0], q[1]] for q in new_bg if q[2] == z]
            labs = [1] * sum(q[2] == z for q in new_fg) + [0] * sum(q[2] == z for q in new_bg)
            steps.append(Step(StepKind.REFINE, {"slice_index": z, "object_id": oid,
                                                "points": pts, "point_labels": labs}))
        mode = "refine"
    else:  # one task: clear, key slice, propagation, refinements (one version, one undo)
        steps = [geo.plan(fg, bg, roi, three_d, oid)]
        mode = "new"
    if roi is not None:  # no step changes the object outside the ROI: the stored version too
        cut = [[roi.lo[a], roi.hi[a]] for a in range(3)]
        steps = [Step(st.kind, {**st.params, "roi": cut}) for st in steps]
    ext = str(p.get("result_extension") or ".nii.gz")
    dtype = str(p.get("result_dtype") or "uint8")
    compress = str(p.get("result_compress", True)).lower() not in ("false", "0", "no")

    def build(labels: npt.NDArray[np.uint8]) -> tuple[Path, int]:  # (file, voxels)
        mask = labels == value
        path = geo.write_result(mask, vol, svc.settings.tmp_dir,
                                f"segloop-{uuid.uuid4().hex[:12]}", ext, dtype, compress)
        return path, int(mask.sum())

    def drop(built: tuple[Path, int]) -> None:  # the steps failed after all
        built[0].unlink(missing_ok=True)

    t1 = time.perf_counter()
    done = await run_steps_building(svc, who, job_id, steps, engine, build, drop)
    tasks, ready = done
    t2 = time.perf_counter()
    number = tasks[-1].get("version") if tasks else None

    def finish() -> tuple[Path, int, int]:  # one thread-pool hop: (file, version, voxels)
        got = ready
        if got is not None and number is not None:
            path, voxels = got
            n = int(number)
        else:  # nothing offered in this process: the stored version
            if got is not None:
                got[0].unlink(missing_ok=True)
            labels, n = svc.store.labels(job_id, who, None if number is None else int(number))
            path, voxels = build(labels)
        refs.put(RefKind.ML_PROMPTS, key, job_id, who.name, {**mine, "version": n})
        return path, n, voxels

    path, n, voxels = await run_in_threadpool(finish)
    t3 = time.perf_counter()
    params = {"label_names": {str(p.get("label") or "object"): 1},
              "latencies": {"pre": round(t1 - t0, 4), "infer": round(t2 - t1, 4),
                            "post": round(t3 - t2, 4), "total": round(t3 - t0, 4)},
              "segloop": {"job_id": job_id, "version": n, "object_id": oid, "engine": engine,
                          "mode": mode, "tasks": [t.get("task_id") for t in tasks],
                          "voxels": voxels}}
    return InferResult(path, params)
