"""Embedded engines in worker processes: a small pool of long-lived child processes, each
with its own :class:`~segloop.jobs.runner.Runtime` (engines, session cache, store), so the
engine compute runs outside the API server's interpreter and its GIL.

Routing (job affinity, a sticky map): a job's first task goes to the process with the fewest
bound jobs (then the fewest tasks in hand), and the job stays bound to that process, which
caches its session; all its later tasks go there. Jobs are not moved to balance load: a
moved job's new process must replay the job's whole history (every propagation again),
which measured far worse than waiting (bench_api: propagations ~10x slower with moves).
The map forgets the least recently used jobs beyond :data:`MAP_SIZE`. A slot whose process
died is started again on its next task (same slot, new process): the new process rebuilds
the session by replaying the job's versions, as after any restart. Tasks the dead process
had been handed are requeued at once (``requeue``) and resubmitted; the reaper would do it
anyway once their heartbeat is stale.

Each child talks to the server over one duplex pipe: the server sends task ids; the child
sends back events (re-published on the server's bus, so SSE works unchanged), each task's
outcome (BLOCKED ones are resubmitted) and its end (for the server's metrics). Cancel
needs no message: the runner reads the cancel flag from the job store. Children are
started with ``spawn`` (never fork a threaded server), ask Linux to kill them when the
server dies (``PR_SET_PDEATHSIG``) and also exit when the pipe closes or the parent
changes, so killing the server leaves no process behind.

Must not import segloop.api, segloop.cli, segloop.worker, segloop.protocols, FastAPI,
Celery or torch (the children import engines lazily, as the runner does).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from segloop.config import Settings
from segloop.jobs.runner import RunOutcome, Runtime
from segloop.jobs.store import JobStore

__all__ = ["MAP_SIZE", "ProcessPool"]

log = logging.getLogger(__name__)

#: jobs remembered by the job -> process map
MAP_SIZE = 10_000


class _PipeBus:
    """The child's event bus: events go through the pipe to the server's bus."""

    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        self._send = send

    def publish(self, job_id: str, event: dict[str, Any]) -> None:
        self._send(("event", job_id, event))

    def wants_progress(self, job_id: str) -> bool:
        return True  # the server's subscribers are not known here

    async def subscribe(self, job_id: str, ends_only: bool = False
                        ) -> Any:  # pragma: no cover - children never serve
        raise NotImplementedError("a worker process does not serve subscriptions")

    def close(self) -> None:
        pass


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies (no orphans after a kill -9)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # pragma: no cover - not Linux: the watchdog below still applies
        pass


def _child_main(settings: Settings, conn: Connection, name: str, parent: int) -> None:
    """A worker process: run the task ids the server sends, with ``settings.workers``
    threads, until the pipe closes or the server goes away."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the server, which closes us
    if os.getppid() != parent:
        os._exit(0)
    lock = threading.Lock()

    def send(msg: tuple[Any, ...]) -> None:
        try:
            with lock:
                conn.send(msg)
        except (OSError, EOFError):  # the server is gone
            os._exit(0)

    store = JobStore(settings)
    runtime = Runtime(settings, store, _PipeBus(send), worker=f"{name}:{os.getpid()}")
    runtime.on_finish = lambda info, secs: send(("finished", info, secs))
    pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix=name)

    def run(task_id: str) -> None:
        try:
            outcome: str = runtime.run(task_id)
        except Exception:  # pragma: no cover - run() records its own failures
            log.exception("task %s crashed the runner", task_id)
            outcome = RunOutcome.DONE
        send(("outcome", task_id, str(outcome)))

    def watchdog() -> None:
        while os.getppid() == parent:
            threading.Event().wait(0.5)
        os._exit(0)

    threading.Thread(target=watchdog, daemon=True, name="segloop-watchdog").start()
    send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (OSError, EOFError):
            break
        if msg is None:
            break
        pool.submit(run, str(msg))
    runtime.close()
    os._exit(0)


class _Slot:
    """One worker process and what it was handed."""

    def __init__(self) -> None:
        self.proc: Any = None
        self.conn: Connection | None = None
        self.lock = threading.Lock()
        self.inflight: dict[str, str] = {}  # task id -> job id


class ProcessPool:
    """``n`` worker processes with job affinity (see the module docstring).

    ``publish``: the server's bus publish; ``on_blocked``: called with a task id whose
    earlier tasks were unfinished (to submit again later); ``on_finish``: the runtime's
    metrics callback; ``requeue``: store.requeue (for the tasks of a dead process)."""

    def __init__(self, settings: Settings, n: int, publish: Callable[[str, dict[str, Any]], None],
                 on_blocked: Callable[[str], None], runtime: Runtime) -> None:
        self.settings, self.n = settings, n
        self.publish, self.on_blocked, self.runtime = publish, on_blocked, runtime
        self._slots = [_Slot() for _ in range(n)]
        self._ctx = mp.get_context("spawn")
        self._closed = False
        self._map: OrderedDict[str, int] = OrderedDict()  # job id -> slot index
        self._map_lock = threading.Lock()

    def pids(self) -> list[int | None]:
        """The pid of each slot's live process (None: not started or dead)."""
        return [s.proc.pid if s.proc is not None and s.proc.is_alive() else None
                for s in self._slots]

    def slot_of(self, job_id: str) -> int | None:
        """The slot a job is bound to (None: none yet)."""
        with self._map_lock:
            return self._map.get(job_id)

    def _route(self, job_id: str) -> int:
        """The slot of a job's next task (see the module docstring); binds the job to it."""
        with self._map_lock:
            pick = self._map.get(job_id)
            if pick is None:
                bound = [0] * self.n
                for i in self._map.values():
                    bound[i] += 1
                pick = min(range(self.n),
                           key=lambda i: (bound[i], len(self._slots[i].inflight), i))
            self._map[job_id] = pick
            self._map.move_to_end(job_id)
            while len(self._map) > MAP_SIZE:
                self._map.popitem(last=False)
            return pick

    def submit(self, job_id: str, task_id: str) -> None:
        """Hand a task to its job's process (started, or started again, as needed)."""
        if self._closed:
            return
        index = self._route(job_id)
        slot = self._slots[index]
        with slot.lock:
            if slot.proc is None or not slot.proc.is_alive():
                self._start(slot, index)
            assert slot.conn is not None
            slot.inflight[task_id] = job_id
            try:
                slot.conn.send(task_id)
            except (OSError, EOFError):  # died just now: the reader requeues it
                log.warning("worker process of slot for task %s is gone", task_id)

    def _start(self, slot: _Slot, index: int) -> None:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        name = f"segloop-proc{index}"
        proc = self._ctx.Process(target=_child_main, name=name, daemon=True,
                                 args=(self.settings, child_conn, name, os.getpid()))
        proc.start()
        child_conn.close()
        slot.proc, slot.conn = proc, parent_conn
        threading.Thread(target=self._read, args=(slot, parent_conn, proc), daemon=True,
                         name=f"{name}-reader").start()
        log.info("started worker process %s (pid %s)", name, proc.pid)

    def _read(self, slot: _Slot, conn: Connection, proc: Any) -> None:
        while True:
            try:
                msg = conn.recv()
            except (OSError, EOFError):
                break
            kind = msg[0]
            if kind == "event":
                self.publish(msg[1], msg[2])
            elif kind == "outcome":
                with slot.lock:
                    slot.inflight.pop(msg[1], None)
                if msg[2] == RunOutcome.BLOCKED:
                    self.on_blocked(msg[1])
            elif kind == "finished" and self.runtime.on_finish is not None:
                self.runtime.on_finish(msg[1], msg[2])
        proc.join(timeout=5)
        with slot.lock:
            lost = sorted(slot.inflight)
            slot.inflight.clear()
            if slot.proc is proc:
                slot.proc, slot.conn = None, None
        if self._closed:
            return
        log.warning("worker process %s (pid %s) exited with %s; %d task(s) to hand on",
                    proc.name, proc.pid, proc.exitcode, len(lost))
        for tid in lost:
            t = self.runtime.store.get_task(tid)
            if t is None:
                continue
            if t.state == "running":
                if not self.runtime.store.requeue(
                        tid, f"worker process {proc.pid} exited ({proc.exitcode})"):
                    continue
            elif t.state != "queued":
                continue
            self.submit(t.job_id, tid)

    def close(self) -> None:
        """Stop the processes: close their pipes, then terminate whatever is left."""
        self._closed = True
        procs = []
        for slot in self._slots:
            with slot.lock:
                if slot.conn is not None:
                    with contextlib.suppress(OSError, EOFError):
                        slot.conn.send(None)
                if slot.proc is not None:
                    procs.append(slot.proc)
        for p in procs:
            p.join(timeout=2)
            if p.is_alive():
                p.terminate()
                p.join(timeout=2)
            if p.is_alive():  # pragma: no cover - stuck in native code
                p.kill()
                p.join(timeout=2)
