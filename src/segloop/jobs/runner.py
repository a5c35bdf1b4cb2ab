"""The task functions both queues run: open (or reuse) an engine session, run the step, save a version.

Concurrency model. A :class:`Runtime` lives once per worker process (the API process in
embedded mode, each ``segloop worker`` in Celery mode). It holds the engines (loaded once per
process by the registry), an LRU cache of engine sessions keyed by job, and the job store.
``Runtime.run(task_id)`` is safe to call from several threads: tasks of one job run in
submission order (a later task waits for earlier ones) and under a per-job lock; tasks of
different jobs run in parallel. A session is cached with the mask version it produced, so a
refine right after a propagation reuses it; when the cache misses (another worker, a restart,
an undo) the session is rebuilt by replaying the version's recorded steps, so nothing held
only in memory is ever needed. A task's version records its steps as a delta: ``[{"op":
"base", "version": p}, step]`` means "the steps of version p, then this one" (an edited mask
records a self-contained list); the full list is assembled by walking the parents, only
when a session has to be rebuilt, so a task's cost does not grow with the job's history.
A cached session that is merely behind (another worker ran the job's last tasks: its version
is an ancestor of the current one) catches up by applying just the steps it missed -- the
same steps in the same order, so the same state as a full replay. A job's cached session is a
:class:`~segloop.jobs.planesessions.PlaneSessions`: a step drawn on a coronal or sagittal slice
(its ``axis``) runs in an engine session on that plane's transposed view of the volume, so it
propagates along the prompt's axis with any engine; the axis is recorded with the step. Tasks are
idempotent: a task that already wrote its version is only marked done, and a task held by a
live worker is not taken twice (heartbeats). Engines are imported lazily, inside task
execution: importing this module never imports torch.

Cost per task (what the service adds to the engine's own time): one transaction claims the
task and reads everything the run needs; one transaction writes the version file's row, makes
it current and marks the task succeeded (the ``done`` event carries the row read back there);
one heartbeat thread per process refreshes all its running tasks; progress is written to the
store at most every 0.25 s (the final state comes with the completion). The composed label
map is offered to a request of this process that waits for it (:mod:`segloop.jobs.handoff`)
once the version's rows are written and while its file is flushed, so the request builds its
answer while the disk works (offered earlier, before the encoding and the rows, its build took
the GIL from this thread's CPU work instead: ~1-2 ms later on the first box's path).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import numpy as np
from sqlalchemy.exc import IntegrityError

from segloop.config import Settings
from segloop.engines.base import Session, drive
from segloop.engines.scheduler import client_scope
from segloop.errors import CancelledError, SegloopError
from segloop.jobs import files
from segloop.jobs.events import EventBus
from segloop.jobs.handoff import LabelHandoff
from segloop.jobs.image2d_job import load_job_image
from segloop.jobs.planesessions import PlaneSessions, plane_of, view_volume
from segloop.jobs.progress import StepProgress, mask_runs
from segloop.jobs.segmentstep import CLEAR, sub_steps
from segloop.jobs.sessioncache import SessionCache
from segloop.jobs.slicerange import SliceRange
from segloop.jobs.states import EventType, TaskKind, TaskState, event_for_state
from segloop.jobs.store import Claim, ClaimOutcome, JobStore, task_dict
from segloop.types import Plane, Prompts, SliceResult

__all__ = ["RunOutcome", "Runtime", "SessionCache", "import_plugins", "mask_runs"]

log = logging.getLogger(__name__)


def import_plugins(names: list[str]) -> None:
    """Import plugin modules named in settings (e.g. ones registering extra engines)."""
    import importlib

    for name in names:
        importlib.import_module(name)


class RunOutcome(StrEnum):
    """How :meth:`Runtime.run` ended."""

    DONE = "done"  # run to its end (succeeded, failed or cancelled: the store says which)
    SKIPPED = "skipped"  # finished, gone or held by a live worker: nothing to do
    BLOCKED = "blocked"  # earlier tasks of its job are unfinished: submit it again later


def _prompts(p: dict[str, Any]) -> Prompts:
    return Prompts.make(p.get("box"), p.get("points") or None, p.get("point_labels") or None)


class Runtime:
    """Per-process worker state: job store, event bus, session cache, engine resolution."""

    def __init__(self, settings: Settings, store: JobStore, bus: EventBus, worker: str) -> None:
        self.settings, self.store, self.bus, self.worker = settings, store, bus, worker
        self.cache = SessionCache(settings.session_cache_size, settings.session_cache_bytes)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._generation = store.get_kv("model_generation", "0")
        self.loaded_engines: set[str] = set()
        self._auto: str | None = None
        self.tasks_done = 0
        self.on_finish: Callable[[dict[str, Any], float], None] | None = None
        self.handoff = LabelHandoff()  # composed masks to requests of this process that wait
        self._running: set[str] = set()
        self._hb_lock = threading.Lock()
        self._hb_thread: threading.Thread | None = None
        self._hb_stop = threading.Event()
        import_plugins(settings.plugins)

    # ------------------------------------------------------------------ heartbeats
    def _beat_loop(self) -> None:
        while not self._hb_stop.wait(self.settings.heartbeat_seconds):
            with self._hb_lock:
                ids = list(self._running)
            if not ids:
                continue
            try:
                self.store.heartbeat(ids, self.worker)
            except Exception as exc:  # pragma: no cover - database hiccup
                log.warning("heartbeat failed: %s", exc)

    def _track(self, task_id: str, running: bool) -> None:
        """Add/remove a task from the set the heartbeat thread keeps alive."""
        with self._hb_lock:
            if running:
                self._running.add(task_id)
                if self._hb_thread is None or not self._hb_thread.is_alive():
                    self._hb_stop.clear()
                    self._hb_thread = threading.Thread(target=self._beat_loop, daemon=True,
                                                       name=f"segloop-heartbeat-{self.worker}")
                    self._hb_thread.start()
            else:
                self._running.discard(task_id)

    def close(self) -> None:
        """Stop the heartbeat thread (tasks still running stop being kept alive)."""
        self._hb_stop.set()

    def _job_lock(self, job_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(job_id, threading.Lock())

    def _check_generation(self, gen: str | None = None) -> str:
        if gen is None:
            gen = self.store.get_kv("model_generation", "0")
        if gen != self._generation:
            log.info("model generation %s -> %s: dropping engines and sessions",
                     self._generation, gen)
            self.cache.clear()
            from segloop.engines.registry import clear_engines

            clear_engines()
            self.loaded_engines.clear()
            self._auto = None
            self._generation = gen
        return gen

    def _engine_name(self, requested: str) -> str:
        """``auto`` resolved once per model generation (a reload re-resolves it)."""
        if requested == "auto":
            if self._auto is None:
                from segloop.engines.registry import resolve_auto

                self._auto = resolve_auto()
            return self._auto
        return requested

    # ------------------------------------------------------------------ sessions
    def _open(self, job_id: str, modality: str | None, engine_name: str) -> PlaneSessions:
        from segloop.engines import get_engine

        engine = get_engine(engine_name)
        self.loaded_engines.add(engine_name)
        image = load_job_image(self.store.job_dir(job_id))
        if image is not None:  # a 2D job: the engine sees the picture itself (RGB kept)
            from segloop.engines.image2d_session import Image2DSession

            pic = Image2DSession(engine, image)

            def open_picture(plane: Plane) -> Session:
                if plane is not Plane.AXIAL:
                    raise SegloopError(f"a 2D image has no {plane.value} slices")
                return pic
            return PlaneSessions(open_picture, pic.shape)
        vol = files.load_canonical(self.store.job_dir(job_id), modality)
        return PlaneSessions(lambda plane: engine.open(view_volume(vol, plane)), vol.shape)

    def _apply(self, session: PlaneSessions, job_id: str, op: dict[str, Any],
               on_progress: Callable[[SliceResult], None] | None = None,
               cancel: Callable[[], bool] | None = None) -> None:
        """Run one step; a prompt's step runs in the session of the plane it was drawn on
        (its ``axis``), whose third axis is that plane's slice axis."""
        kind = op["op"]
        if kind == TaskKind.SEGMENT:  # its own steps, each with the ROI (the clear without)
            for sub in sub_steps(op):
                self._apply(session, job_id, sub, on_progress, cancel)
            return
        oid = int(op.get("object_id", 1))
        roi = op.get("roi")  # only this region may change (a MONAI Label ROI, a patch)
        before = np.array(session.mask(oid), bool) if roi else None
        if kind == CLEAR:
            if session.mask(oid).any():
                session.set_mask(np.zeros(session.shape, bool), oid)
        elif kind == "set_mask":
            v = self.store.version_row(job_id, int(op["version"]))
            if v is None:
                raise SegloopError(f"version {op['version']} of job {job_id} is missing")
            labels = files.load_labels(self.store.job_dir(job_id) / v.path)
            for o, lv in op.get("objects", {}).items():
                session.set_mask(labels == int(lv), int(o))
        elif kind in (TaskKind.INITIAL_MASK, TaskKind.PROPAGATE, TaskKind.REFINE):
            plane = plane_of(op)
            view = session.view(plane)
            try:
                if kind == TaskKind.INITIAL_MASK:
                    view.segment_slice(int(op["slice_index"]), _prompts(op), oid)
                else:  # the slice range acts along the plane's slice axis too
                    with SliceRange.of(op, view, oid) as rng:
                        steps = (view.propagate(int(op["slice_index"]), None, oid,
                                                **rng.kwargs())
                                 if kind == TaskKind.PROPAGATE else
                                 view.refine(int(op["slice_index"]), _prompts(op), oid,
                                             **rng.kwargs()))
                        drive(steps, rng.filter(on_progress), cancel)
            finally:  # also after a cancel: the view keeps the slices it computed
                session.changed(plane, [oid])
        else:  # pragma: no cover - replay lists are written by this module
            raise SegloopError(f"unknown step {kind!r} in a replay list")
        if roi and before is not None:  # outside the region the mask stays as it was
            after = session.mask(oid)
            box = tuple(slice(a, b + 1) for a, b in roi)
            before[box] = after[box]
            if not np.array_equal(before, after):
                session.set_mask(before, oid)

    def steps(self, job_id: str, v: Any, since: int | None = None
              ) -> tuple[list[dict[str, Any]], bool]:
        """The steps that lead to version row ``v`` (``number``, ``replay``), following
        ``base`` references to parent versions: all of them, or only those after version
        ``since`` when it is an ancestor (then the flag is True)."""
        ops: list[dict[str, Any]] = []
        row = v
        while row is not None:
            rec = list(row.replay)
            if not (rec and rec[0].get("op") == "base"):
                return rec + ops, False  # self-contained: the whole history
            ops = rec[1:] + ops
            parent = int(rec[0]["version"])
            if parent == since:
                return ops, True
            row = self.store.version_row(job_id, parent)
            if row is None:
                raise SegloopError(f"version {parent} of job {job_id} is missing")
        return ops, False

    def session_for(self, job_id: str, modality: str | None, engine_name: str,
                    v: Any) -> PlaneSessions:
        """The job's session at its current version.

        ``v``: the job's current version row (``number``, ``replay``; the claim read it), or
        None when the job has no version yet."""
        gen = self._generation
        cur = v.number if v is not None else 0
        hit = self.cache.get(job_id, engine_name, cur, gen)
        if isinstance(hit, PlaneSessions):
            return hit
        cached = self.cache.peek(job_id, engine_name, gen)
        if cached is not None and not isinstance(cached[0], PlaneSessions):
            cached = None  # pragma: no cover - the runner caches nothing else
        todo, behind = self.steps(job_id, v, cached[1] if cached else None)
        sess = cached[0] if cached is not None and behind else self._open(
            job_id, modality, engine_name)
        assert isinstance(sess, PlaneSessions)
        try:
            for op in todo:
                self._apply(sess, job_id, op)
        except BaseException:
            self.cache.drop(job_id)
            raise
        self.cache.put(job_id, engine_name, cur, gen, sess)
        return sess

    @staticmethod
    def compose(session: Session, shape: tuple[int, ...], labels_of: dict[int, int]
                ) -> np.ndarray[Any, Any]:
        """The label map ``(X, Y, Z)`` uint8 of all objects of a session (higher ids on top)."""
        out = np.zeros(shape, np.uint8)
        for oid in sorted(session.objects()):  # copyto: ~3x cheaper than boolean indexing
            np.copyto(out, np.uint8(labels_of.get(oid, oid)), where=session.mask(oid))
        return out

    # ------------------------------------------------------------------ tasks
    def _publish(self, job_id: str, event: dict[str, Any]) -> None:
        self.bus.publish(job_id, event)

    def run(self, task_id: str, wait_seconds: float | None = None) -> RunOutcome:
        """Run one task to its end; returns DONE, SKIPPED (finished/taken elsewhere) or
        BLOCKED (earlier tasks of the job are unfinished: submit it again later)."""
        deadline = time.monotonic() + (wait_seconds if wait_seconds is not None
                                       else 2 * self.settings.heartbeat_seconds)
        while True:
            outcome, claimed = self.store.claim(task_id, self.worker)
            if outcome != ClaimOutcome.BLOCKED:
                break
            if time.monotonic() > deadline:
                return RunOutcome.BLOCKED
            time.sleep(0.02)
        if claimed is None:
            return RunOutcome.SKIPPED
        with self._job_lock(claimed.job_id):
            self._run_claimed(claimed)
        return RunOutcome.DONE

    def _run_claimed(self, claim: Claim) -> None:
        task_id = claim.task.id
        t0 = time.monotonic()
        self._track(task_id, True)
        try:  # device work shares the owner's turn at an engine's device scheduler
            with client_scope(claim.task.owner):
                final = self._execute(claim, t0)
        finally:
            self._track(task_id, False)
        self.tasks_done += 1
        if self.on_finish is not None:
            self.on_finish(final, time.monotonic() - t0)

    def _execute(self, claim: Claim, t0: float) -> dict[str, Any]:
        task = claim.task
        task_id, job_id = task.id, claim.job_id
        base = {"job_id": job_id, "task_id": task_id, "kind": task.kind}
        try:
            if task.cancel_requested:
                raise CancelledError("cancelled before it started")
            if claim.done_version is not None:  # an earlier attempt wrote it, then died
                return self._finish(task_id, TaskState.SUCCEEDED, None, claim.done_version, base)
            self._publish(job_id, {**base, "type": EventType.STARTED, "stage": "loading",
                                   "attempt": task.attempts})
            gen = self._check_generation(claim.generation)
            params = dict(task.params)
            engine_name = self._engine_name(params.get("engine") or "auto")
            session = self.session_for(job_id, claim.modality, engine_name, claim.version)
            cur = claim.version.number if claim.version is not None else 0
            op = {"op": task.kind, **{k: v for k, v in params.items() if k != "engine"}}
            record = [{"op": "base", "version": cur}, op] if cur else [op]
            slices = self._run_step(session, task_id, job_id, op, base, t0)
            labels = self.compose(session, claim.shape, claim.labels_of)
            try:  # a waiting request builds its answer from the labels during the fsync
                n, info = self.store.complete_task(
                    job_id, task_id, labels, author=task.owner, source=f"{task.kind}",
                    engine=engine_name, replay=record, slices=slices,
                    while_flushing=lambda: self.handoff.offer(job_id, task_id, labels))
            except IntegrityError:  # a duplicate run of this task won the race: keep its
                self.cache.drop(job_id)  # version (same inputs, same result)
                return self._finished(task_id, TaskState.SUCCEEDED, None, base)
            self.cache.put(job_id, engine_name, n, gen, session)
            return self._published(info.as_dict(), base)
        except CancelledError as exc:
            self.cache.drop(job_id)
            return self._finish(task_id, TaskState.CANCELLED, str(exc), None, base)
        except SegloopError as exc:
            self.cache.drop(job_id)
            return self._finish(task_id, TaskState.FAILED, str(exc), None, base)
        except Exception as exc:
            log.exception("task %s failed", task_id)
            self.cache.drop(job_id)
            return self._finish(task_id, TaskState.FAILED,
                                f"internal error: {type(exc).__name__}: {exc}", None, base)

    def _run_step(self, session: PlaneSessions, task_id: str, job_id: str, op: dict[str, Any],
                  base: dict[str, Any], t0: float) -> tuple[int, int] | None:
        """Run one step, publishing progress; returns the final (slices done, total) of a
        propagation (None for a 2D step)."""
        plane = plane_of(op)  # progress masks are slices of the prompt's plane
        step = StepProgress(self._publish, self.store, task_id, job_id,
                            base if plane is Plane.AXIAL else {**base, "axis": plane.value},
                            int(op.get("object_id", 1)),
                            lambda: self.bus.wants_progress(job_id))
        stage = ("segmenting" if op["op"] in (TaskKind.INITIAL_MASK, TaskKind.SEGMENT)
                 else "propagating")
        self._publish(job_id, {**base, "type": EventType.PROGRESS, "stage": stage, "progress": 0.0})
        self._apply(session, job_id, op, step.on_progress, step.cancelled)
        return step.final

    def _finish(self, task_id: str, state: str, error: str | None, version: int | None,
                base: dict[str, Any]) -> dict[str, Any]:
        self.store.finish_task(task_id, state, error, version)
        return self._finished(task_id, state, error, base)

    def _finished(self, task_id: str, state: str, error: str | None, base: dict[str, Any]
                  ) -> dict[str, Any]:
        """Publish a recorded task end (read back from the store) and log it."""
        row = self.store.get_task(task_id)
        info = task_dict(row) if row is not None else {**base, "state": state, "error": error}
        return self._published(info, base)

    def _published(self, info: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
        """Publish a task's recorded end state ``info`` and log it."""
        state = info["state"]
        self._publish(base["job_id"], {**info, "type": event_for_state(state)})
        log.info("task %s %s", base["task_id"], state,
                 extra={"job_id": base["job_id"], "kind": base["kind"], "error": info["error"]})
        return info

    def reap(self, resubmit: Callable[[str], None]) -> list[str]:
        """Requeue (via ``resubmit``) or fail running tasks whose worker went silent; a requeued
        task's job gets a ``recovering`` event (stage ``recovering``, the reason), a failed one
        a ``failed`` event."""
        out = []
        for tid in self.store.stale_tasks():
            t = self.store.get_task(tid)
            reason = (f"worker {t.worker if t else '?'} stopped reporting for more than "
                      f"{self.settings.stale_after_seconds:g} s (crashed or killed)")
            if self.store.requeue(tid, reason):
                log.warning("requeued task %s: %s", tid, reason)
                t = self.store.get_task(tid)
                if t is not None:  # SSE clients learn why the task went quiet
                    self._publish(t.job_id, {**task_dict(t), "type": EventType.RECOVERING,
                                             "stage": "recovering", "reason": reason})
                resubmit(tid)
            else:
                t = self.store.get_task(tid)
                if t is not None and t.state == TaskState.FAILED:
                    self._publish(t.job_id, {**task_dict(t), "type": EventType.FAILED})
            out.append(tid)
        return out
