"""Run segloop tasks for a protocol request and wait for their end; shared helpers of the adapters.

A MONAI Label ``/infer`` or an nnInteractive ``add_*_interaction`` is a blocking call for its
client, while segloop runs engine work as queued tasks (embedded threads or Celery workers).
:func:`run_steps` records the steps as ordinary segloop tasks (so the web viewer, review,
``segloop train`` and the audit log see them, with who and which engine), subscribes to the
job's events *before* submitting (its tasks' ends only), and returns when the last one ends;
:func:`run_steps_building` also builds the answer from the worker's label map while the
version is flushed to disk. The handler awaits on the event loop; nothing here blocks it
except short store calls in the thread pool.

Also: reading an upload's form (fields and files; several files become one .zip upload)
within the size limit. Imports segloop.api's services type, jobs, io and config;
never engines or torch.
Must not import segloop.cli (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request

from segloop.api.app import Services
from segloop.errors import InputError, SegloopError, VolumeTooLargeError
from segloop.jobs.errors import ConflictError
from segloop.jobs.handoff import Watch
from segloop.jobs.states import TERMINAL, EventType, TaskState
from segloop.jobs.store import Principal

__all__ = ["Form", "Step", "StepKind", "TaskFailedError", "read_form", "run_steps",
           "run_steps_building", "submit"]

T = TypeVar("T")
LabelMap = npt.NDArray[np.uint8]


class StepKind(StrEnum):
    """The segloop task kinds a protocol request turns into."""

    INITIAL = "initial-mask"
    PROPAGATE = "propagate"
    REFINE = "refine"
    SEGMENT = "segment"  # a whole object afresh in one step (segloop.jobs.segmentstep)


@dataclass(frozen=True)
class Step:
    """One task to submit: its kind and the task params (canonical voxel indices)."""

    kind: StepKind
    params: dict[str, Any]


class TaskFailedError(SegloopError):
    """A task of a protocol request failed (bad prompt for this volume, engine error...)."""

    http_status = 422


def submit(svc: Services, who: Principal, job_id: str, step: Step, engine: str) -> str:
    """Record and queue one task (same path as the REST API's prompts); returns its id."""
    params = {**step.params, "engine": engine}
    known = svc.engine_names()
    if engine not in known:
        known = svc.engine_names(refresh=True)
    t = svc.store.create_task(job_id, step.kind.value, params, who, known)
    svc.queue.submit(t.task_id, t.job_id)
    svc.bus.publish(job_id, {**t.as_dict(), "type": EventType.QUEUED})
    svc.metrics.tasks_submitted.labels(kind=step.kind.value).inc()
    return t.task_id


def _submit_then(svc: Services, who: Principal, job_id: str, step: Step, engine: str,
                 then: Callable[[], None] | None) -> str:
    task_id = submit(svc, who, job_id, step, engine)
    if then is not None:  # the worker has the task already: this runs beside it
        then()
    return task_id


async def run_steps(svc: Services, who: Principal, job_id: str, steps: list[Step], engine: str,
                    timeout: float = 600.0, watch: Watch | None = None,
                    after_submit: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    """Submit ``steps`` in order and wait until all have ended; returns their final task dicts.

    ``watch`` (made before the call): told to expect the last step's labels as soon as it is
    submitted. ``after_submit``: short store work (a protocol's own state) run in the same
    thread-pool hop right after the last step is queued, so the worker need not wait for it.
    TaskFailedError with the first failure's message when one did not succeed."""
    if not steps:
        return []
    sub = await svc.bus.subscribe(job_id, ends_only=True)  # no wake-up per progress event
    try:
        ids: list[str] = []
        for i, st in enumerate(steps):
            then = after_submit if i == len(steps) - 1 else None
            ids.append(await run_in_threadpool(_submit_then, svc, who, job_id, st, engine, then))
        if watch is not None:
            watch.expect(ids[-1])
        ended: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while len(ended) < len(ids):
            ev = await sub.get(timeout=1.0)
            if ev is not None:
                tid = ev.get("task_id")
                if tid in ids and ev.get("type") in (EventType.DONE, EventType.FAILED, EventType.CANCELLED):
                    ended[str(tid)] = ev
                continue
            for tid in ids:  # a lost event (broker blip) must not hang the client
                if tid not in ended:
                    rec = await run_in_threadpool(svc.store.task_for, job_id, tid, who)
                    if rec.state in TERMINAL:
                        ended[tid] = rec.as_dict()
            if time.monotonic() > deadline:
                raise ConflictError(f"segloop tasks did not finish within {timeout:g} s")
    finally:
        await sub.close()
    out = [ended[t] for t in ids]
    for t in out:
        if t.get("state") != TaskState.SUCCEEDED:
            raise TaskFailedError(f"{t.get('kind')} failed: {t.get('error') or t.get('state')}")
    return out


async def run_steps_building(svc: Services, who: Principal, job_id: str, steps: list[Step],
                             engine: str, build: Callable[[LabelMap], T],
                             discard: Callable[[T], None] | None = None,
                             after_submit: Callable[[], None] | None = None
                             ) -> tuple[list[dict[str, Any]], T | None]:
    """:func:`run_steps`, and meanwhile the answer: ``build`` runs in the thread pool on the
    last step's label map as soon as the embedded worker offers it (before the version's
    durable write; :mod:`segloop.jobs.handoff`), so it overlaps the flush to disk. Returns the
    tasks (after their ends, i.e. after the commit) and what ``build`` made, or None when
    nothing was offered (other workers; no steps): then the caller reads the stored version.
    When the steps fail, what was built is given to ``discard``. ``after_submit``: as for
    :func:`run_steps`."""
    watch = svc.runtime.handoff.watch(job_id)

    async def early() -> T | None:
        labels = await watch.wait()
        return None if labels is None else await run_in_threadpool(build, labels)

    built = asyncio.ensure_future(early())
    try:
        tasks = await run_steps(svc, who, job_id, steps, engine, watch=watch,
                                after_submit=after_submit)
    except BaseException:
        watch.close()
        got = (await asyncio.gather(built, return_exceptions=True))[0]
        if got is not None and not isinstance(got, BaseException) and discard is not None:
            discard(got)
        raise
    watch.close()
    return tasks, await built


@dataclass
class Form:
    """A multipart form: text fields, and the files saved under the service's tmp folder
    (``name -> [(path, client file name), ...]`` in the order sent: a field may carry several
    files, e.g. a DICOM series); the caller removes the files."""

    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, list[tuple[Path, str]]] = field(default_factory=dict)

    def cleanup(self) -> None:
        """Delete the saved files."""
        for parts in self.files.values():
            for path, _ in parts:
                path.unlink(missing_ok=True)

    def upload(self, tmp_dir: Path, *names: str) -> tuple[Path, str]:
        """The file sent under the first of ``names`` present, as one upload: a single file as
        it is, several files (a DICOM series, a header and its data file) packed into one
        ``.zip`` (a new file of this form) that segloop's ingest unpacks. InputError when none
        of ``names`` carries a file."""
        for n in names:
            parts = self.files.get(n)
            if parts:
                return parts[0] if len(parts) == 1 else self._zip(tmp_dir, n, parts)
        raise InputError(f"the form has no file: send it as the file field {names[0]!r}")

    def _zip(self, tmp_dir: Path, name: str, parts: list[tuple[Path, str]]) -> tuple[Path, str]:
        import uuid
        import zipfile

        names = [_part_name(fname, i) for i, (_, fname) in enumerate(parts)]
        dicom = [_series_uid(src) for src, _ in parts]
        if all(u is not None for u in dicom):
            series = sorted({str(u) for u in dicom})
            if len(series) > 1:
                more = ", ..." if len(series) > 3 else ""
                raise InputError(f"the upload holds files of {len(series)} DICOM series "
                                 f"(UIDs ending {', '.join(u[-12:] for u in series[:3])}{more})"
                                 ": send the files of one series per session")
        else:
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise InputError(f"two files are named {dup[0]!r}: a header names its data "
                                 "file by name, so each name may come once")
        path = tmp_dir / f"form-{uuid.uuid4()}"
        self.files.setdefault(f"{name}.zip", []).append((path, ""))  # removed by cleanup
        seen: set[str] = set()
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
            for i, ((src, _), arc) in enumerate(zip(parts, names, strict=True)):
                if arc in seen:  # DICOM files of one series under the same name: keep both
                    arc = f"{i}-{arc}"
                seen.add(arc)
                zf.write(src, arc)
        stem = names[0].split(".")[0] or "upload"
        return path, f"{stem}.zip"


def _part_name(fname: str, i: int) -> str:
    """A multi-file part's plain file name; InputError for one that climbs out of its folder
    (``../x``) or is absolute: a client that sends such names is confused or hostile."""
    raw = fname.replace("\\", "/")
    if raw.startswith("/") or ".." in raw.split("/") or (len(raw) > 1 and raw[1] == ":"):
        raise InputError(f"file name {fname[:80]!r} points outside its folder: send plain "
                         "file names")
    return raw.rsplit("/", 1)[-1] or f"file{i}"


def _series_uid(path: Path) -> str | None:
    """The SeriesInstanceUID of a DICOM file ("" when it has none), None when not DICOM."""
    from segloop.jobs.files import is_dicom

    with open(path, "rb") as fh:
        if not is_dicom(fh.read(256)):
            return None
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
    except Exception:
        return None
    return str(ds.get("SeriesInstanceUID", "") or "")


async def read_form(request: Request, svc: Services) -> Form:
    """Read a multipart (or urlencoded) form within ``max_upload_bytes``: fields as text, each
    file part written to ``<home>/tmp`` under a generated name."""
    import uuid

    limit = svc.settings.max_upload_bytes
    cl = request.headers.get("content-length")
    if cl is not None and cl.isdigit() and int(cl) > limit + 65536:
        raise VolumeTooLargeError(f"upload larger than the limit of {limit} bytes; ask the "
                                  "administrator to raise SEGLOOP_MAX_UPLOAD_BYTES")
    ctype = request.headers.get("content-type", "")
    out = Form()
    if not ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        return out
    try:
        form = await request.form(max_files=svc.settings.max_zip_entries, max_fields=64)
    except Exception as exc:
        raise InputError(f"the request body is not a readable form ({exc})") from exc
    svc.settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    size = 0  # all files together
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                path = svc.settings.tmp_dir / f"form-{uuid.uuid4()}"
                out.files.setdefault(name, []).append((path, value.filename or ""))
                with open(path, "wb") as fh:
                    while chunk := await value.read(1 << 20):
                        size += len(chunk)
                        if size > limit:
                            fh.close()
                            path.unlink(missing_ok=True)
                            raise VolumeTooLargeError(f"upload larger than the limit of {limit}"
                                                      " bytes")
                        fh.write(chunk)
            else:
                out.fields[name] = str(value)
    except BaseException:
        out.cleanup()
        raise
    finally:
        await form.close()
    return out
