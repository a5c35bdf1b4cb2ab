"""The task functions both queues run: open (or reuse) an engine session, run the step, save a version.

Concurrency model. A :class:`Runtime` lives once per worker process (the API process in
embedded mode, each ``segloop worker`` in Celery mode). It holds the engines (loaded once per
process by the registry), an LRU cache of engine sessions keyed by job, and the job store.
``Runtime.run(task_id)`` is safe to call from several threads: tasks of one job run in
submission order (a later task waits for earlier ones) and under a per-job lock; tasks of
different jobs run in parallel. A session is cached with the mask version it produced, so a
refine right after a propagation reuses it; when the cache misses (another worker, a restart,
an undo) the session is rebuilt by replaying the version's recorded steps, so nothing held
only in memory is ever needed. Tasks are idempotent: a task that already wrote its version is
only marked done, and a task held by a live worker is not taken twice (heartbeats). Engines
are imported lazily, inside task execution: importing this module never imports torch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.exc import IntegrityError

from segloop.config import Settings
from segloop.engines.base import Session, drive
from segloop.errors import CancelledError, SegloopError
from segloop.jobs import files
from segloop.jobs.db import JobRow, TaskRow
from segloop.jobs.errors import NotFoundError
from segloop.jobs.events import EventBus
from segloop.jobs.store import JobStore, task_dict
from segloop.types import Prompts, SliceResult

__all__ = ["Runtime", "SessionCache", "import_plugins", "mask_runs"]

log = logging.getLogger(__name__)


def import_plugins(names: list[str]) -> None:
    """Import plugin modules named in settings (e.g. ones registering extra engines)."""
    import importlib

    for name in names:
        importlib.import_module(name)


@dataclass
class _Entry:
    engine: str
    version: int
    generation: str
    session: Session


class SessionCache:
    """Least-recently-used engine sessions, keyed by job id."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._d: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, job_id: str, engine: str, version: int, generation: str) -> Session | None:
        """The cached session when it is at ``version`` with the same engine and model generation."""
        with self._lock:
            e = self._d.get(job_id)
            if e is None or (e.engine, e.version, e.generation) != (engine, version, generation):
                return None
            self._d.move_to_end(job_id)
            return e.session

    def put(self, job_id: str, engine: str, version: int, generation: str,
            session: Session) -> None:
        """Cache a session as being at ``version``."""
        with self._lock:
            self._d[job_id] = _Entry(engine, version, generation, session)
            self._d.move_to_end(job_id)
            while len(self._d) > self.size:
                self._d.popitem(last=False)

    def drop(self, job_id: str) -> None:
        """Forget a job's session (after a failure leaves it half-updated)."""
        with self._lock:
            self._d.pop(job_id, None)

    def clear(self) -> None:
        """Forget all sessions."""
        with self._lock:
            self._d.clear()

    def __len__(self) -> int:
        return len(self._d)


def mask_runs(mask: np.ndarray[Any, Any]) -> list[int]:
    """Run lengths of a 2D mask ``(X, Y)`` flattened x-fastest (NIfTI order), alternating runs
    of 0 and 1 starting with 0 (possibly a 0-length run): how progress events carry the slice
    masks the web viewer paints while a propagation runs."""
    flat = np.asarray(mask, bool).ravel(order="F")
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], change, [flat.size]))).tolist()
    return [0, *runs] if flat[0] else runs


def _prompts(p: dict[str, Any]) -> Prompts:
    return Prompts.make(p.get("box"), p.get("points") or None, p.get("point_labels") or None)


class Runtime:
    """Per-process worker state: job store, event bus, session cache, engine resolution."""

    def __init__(self, settings: Settings, store: JobStore, bus: EventBus, worker: str) -> None:
        self.settings, self.store, self.bus, self.worker = settings, store, bus, worker
        self.cache = SessionCache(settings.session_cache_size)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._generation = store.get_kv("model_generation", "0")
        self.loaded_engines: set[str] = set()
        self._auto: str | None = None
        self.tasks_done = 0
        self.on_finish: Callable[[dict[str, Any], float], None] | None = None
        import_plugins(settings.plugins)

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
    def _open(self, job: JobRow, engine_name: str) -> Session:
        from segloop.engines import get_engine

        engine = get_engine(engine_name)
        self.loaded_engines.add(engine_name)
        vol = files.load_canonical(self.store.job_dir(job.id), job.modality)
        return engine.open(vol)

    def _apply(self, session: Session, job_id: str, op: dict[str, Any],
               on_progress: Callable[[SliceResult], None] | None = None,
               cancel: Callable[[], bool] | None = None) -> None:
        kind = op["op"]
        oid = int(op.get("object_id", 1))
        if kind == "initial-mask":
            session.segment_slice(int(op["slice_index"]), _prompts(op), oid)
        elif kind == "propagate":
            drive(session.propagate(int(op["slice_index"]), None, oid), on_progress, cancel)
        elif kind == "refine":
            drive(session.refine(int(op["slice_index"]), _prompts(op), oid), on_progress, cancel)
        elif kind == "set_mask":
            v = self.store.version_row(job_id, int(op["version"]))
            if v is None:
                raise SegloopError(f"version {op['version']} of job {job_id} is missing")
            labels = files.load_labels(self.store.job_dir(job_id) / v.path)
            for o, lv in op.get("objects", {}).items():
                session.set_mask(labels == int(lv), int(o))
        else:  # pragma: no cover - replay lists are written by this module
            raise SegloopError(f"unknown step {kind!r} in a replay list")

    def session_for(self, job: JobRow, engine_name: str, v: Any = "read"
                    ) -> tuple[Session, list[dict[str, Any]]]:
        """The job's session at its current version, and that version's replay list.

        ``v``: the current version row when the caller already read it (None: no version)."""
        gen = self._generation
        if isinstance(v, str):
            v = self.store.version_row(job.id)
        replay = list(v.replay) if v is not None else []
        cur = v.number if v is not None else 0
        sess = self.cache.get(job.id, engine_name, cur, gen)
        if sess is None:
            sess = self._open(job, engine_name)
            for op in replay:
                self._apply(sess, job.id, op)
            self.cache.put(job.id, engine_name, cur, gen, sess)
        return sess, replay

    @staticmethod
    def compose(session: Session, shape: tuple[int, ...], labels_of: dict[int, int]
                ) -> np.ndarray[Any, Any]:
        """The label map ``(X, Y, Z)`` uint8 of all objects of a session (higher ids on top)."""
        out = np.zeros(shape, np.uint8)
        for oid in sorted(session.objects()):
            out[session.mask(oid)] = labels_of.get(oid, oid)
        return out

    # ------------------------------------------------------------------ tasks
    def _publish(self, job_id: str, event: dict[str, Any]) -> None:
        self.bus.publish(job_id, event)

    def run(self, task_id: str, wait_seconds: float | None = None) -> str:
        """Run one task to its end; returns "done", "skipped" (finished/taken elsewhere) or
        "blocked" (earlier tasks of the job are unfinished: submit it again later)."""
        deadline = time.monotonic() + (wait_seconds if wait_seconds is not None
                                       else 2 * self.settings.heartbeat_seconds)
        while True:
            outcome, claimed = self.store.try_claim(task_id, self.worker)
            if outcome != "blocked":
                break
            if time.monotonic() > deadline:
                return "blocked"
            time.sleep(0.02)
        if claimed is None:
            return "skipped"
        job_id = claimed.job_id
        with self._job_lock(job_id):
            self._run_claimed(claimed)
        return "done"

    def _run_claimed(self, task: TaskRow) -> None:
        task_id = task.id
        t0 = time.monotonic()
        stop_hb = threading.Event()

        def beat() -> None:
            while not stop_hb.wait(self.settings.heartbeat_seconds):
                try:
                    self.store.heartbeat(task_id, self.worker)
                except Exception as exc:  # pragma: no cover - database hiccup
                    log.warning("heartbeat failed: %s", exc)

        hb = threading.Thread(target=beat, name=f"heartbeat-{task_id[:8]}", daemon=True)
        hb.start()
        try:
            final = self._execute(task, t0)
        finally:
            stop_hb.set()
        self.tasks_done += 1
        if self.on_finish is not None:
            self.on_finish(final, time.monotonic() - t0)

    def _execute(self, task: TaskRow, t0: float) -> dict[str, Any]:
        task_id, job_id = task.id, task.job_id
        base = {"job_id": job_id, "task_id": task_id, "kind": task.kind}
        try:
            if task.cancel_requested:
                raise CancelledError("cancelled before it started")
            try:
                ctx = self.store.task_context(job_id, task_id)
            except NotFoundError:
                raise CancelledError("the job was deleted") from None
            if ctx["done_version"] is not None:  # an earlier attempt wrote it, then died
                return self._finish(task_id, "succeeded", None, ctx["done_version"], base)
            self._publish(job_id, {**base, "type": "started", "stage": "loading",
                                   "attempt": task.attempts})
            gen = self._check_generation(ctx["generation"])
            job: JobRow = ctx["job"]
            params = dict(task.params)
            engine_name = self._engine_name(params.get("engine") or "auto")
            session, replay = self.session_for(job, engine_name, ctx["version"])
            op = {"op": task.kind, **{k: v for k, v in params.items() if k != "engine"}}
            self._run_step(session, task_id, job_id, op, base, t0)
            labels = self.compose(session, tuple(job.shape), ctx["labels_of"])
            try:
                n = self.store.add_version(job_id, labels, author=task.owner,
                                           source=f"{task.kind}", engine=engine_name,
                                           task_id=task_id, replay=[*replay, op], finish=True)
            except IntegrityError:  # a duplicate run of this task won the race: keep its
                self.cache.drop(job_id)  # version (same inputs, same result)
                return self._finished(task_id, "succeeded", None, base)
            self.cache.put(job_id, engine_name, n, gen, session)
            return self._finished(task_id, "succeeded", None, base)
        except CancelledError as exc:
            self.cache.drop(job_id)
            return self._finish(task_id, "cancelled", str(exc), None, base)
        except SegloopError as exc:
            self.cache.drop(job_id)
            return self._finish(task_id, "failed", str(exc), None, base)
        except Exception as exc:
            log.exception("task %s failed", task_id)
            self.cache.drop(job_id)
            return self._finish(task_id, "failed", f"internal error: {type(exc).__name__}: {exc}",
                                None, base)

    def _run_step(self, session: Session, task_id: str, job_id: str, op: dict[str, Any],
                  base: dict[str, Any], t0: float) -> None:
        last_db = [0.0]
        last_pub = [0.0]
        last_cancel = [0.0, False]
        start = time.monotonic()
        pending: dict[int, list[int]] = {}  # slice masks not yet published (web viewer)

        def on_progress(r: SliceResult) -> None:
            now = time.monotonic()
            frac = r.done / r.total if r.total else 1.0
            eta = (now - start) / r.done * (r.total - r.done) if r.done else None
            ev = {"stage": "propagating", "progress": round(frac, 4), "slices_done": r.done,
                  "slices_total": r.total, "eta_seconds": None if eta is None else round(eta, 2)}
            pending[int(r.z)] = mask_runs(r.mask)
            if now - last_pub[0] >= 0.05 or r.done == r.total:  # at most 20 events/s
                last_pub[0] = now
                masks = dict(pending)
                pending.clear()
                self._publish(job_id, {**base, "type": "progress", "z": r.z,
                                       "object_id": int(op.get("object_id", 1)),
                                       "masks": masks, **ev})
            if now - last_db[0] > 0.25 or r.done == r.total:
                last_db[0] = now
                self.store.set_progress(task_id, **ev)

        def cancelled() -> bool:
            now = time.monotonic()
            if now - float(last_cancel[0]) > 0.2:
                last_cancel[0] = now
                last_cancel[1] = self.store.is_cancel_requested(task_id)
            return bool(last_cancel[1])

        stage = "segmenting" if op["op"] == "initial-mask" else "propagating"
        self._publish(job_id, {**base, "type": "progress", "stage": stage, "progress": 0.0})
        self._apply(session, job_id, op, on_progress, cancelled)

    def _finish(self, task_id: str, state: str, error: str | None, version: int | None,
                base: dict[str, Any]) -> dict[str, Any]:
        self.store.finish_task(task_id, state, error, version)
        return self._finished(task_id, state, error, base)

    def _finished(self, task_id: str, state: str, error: str | None, base: dict[str, Any]
                  ) -> dict[str, Any]:
        """Publish a recorded task end and log it."""
        row = self.store.get_task(task_id)
        info = task_dict(row) if row is not None else {**base, "state": state, "error": error}
        event_type = {"succeeded": "done"}.get(state, state)
        self._publish(base["job_id"], {**info, "type": event_type})
        log.info("task %s %s", task_id, state,
                 extra={"job_id": base["job_id"], "kind": base["kind"], "error": error})
        return info

    def reap(self, resubmit: Callable[[str], None]) -> list[str]:
        """Requeue (via ``resubmit``) or fail running tasks whose worker went silent."""
        out = []
        for tid in self.store.stale_tasks():
            t = self.store.get_task(tid)
            reason = (f"worker {t.worker if t else '?'} stopped reporting for more than "
                      f"{self.settings.stale_after_seconds:g} s (crashed or killed)")
            if self.store.requeue(tid, reason):
                log.warning("requeued task %s: %s", tid, reason)
                resubmit(tid)
            else:
                t = self.store.get_task(tid)
                if t is not None and t.state == "failed":
                    self._publish(t.job_id, {**task_dict(t), "type": "failed"})
            out.append(tid)
        return out
