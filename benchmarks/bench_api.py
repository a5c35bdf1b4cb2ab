"""What the service adds to the engine's own time: the same work through HTTP vs a direct call.

For a 2D prompt (initial-mask) and a 3D propagation, 8 concurrent clients each send N requests:

- direct: each client hands the engine call to a pool of W threads (the same parallelism as the
  service's workers) and waits for it: the engine's own time including queueing, no HTTP;
- http/embedded: ``segloop serve`` (W embedded worker threads); each request is submit ->
  Server-Sent Events until the task's ``done`` event (the result is pushed, never polled);
- direct/procs: the same with a pool of W *processes* (each holding warm sessions of every
  client): the fair baseline for Celery, whose W workers are processes too and so are not
  bound by one interpreter lock the way W threads are;
- http/celery: ``segloop serve --queue celery`` + W ``segloop worker`` processes + Redis.
- http/emb-procs: ``segloop serve`` with ``SEGLOOP_EMBEDDED_PROCESSES=W`` (one worker thread
  each): the engines run in W worker processes with job affinity, outside the server's GIL.

Prints p50/p95 latency per mode, the HTTP/direct ratio and difference (embedded against
direct, celery against direct/procs), and the CPU each mode
spends per request (direct: the benchmark process; http: the server and worker processes, read
with psutil; ``client``: the benchmark process's own HTTP client) -- on a loaded 2-core machine
the CPU figures are the stable ones, latency under 8 clients is mostly queueing behind them.

Fairness: both sides run the same engine calls on warm sessions (each client its own volume),
with the same number of workers (W pool threads vs W embedded threads / W Celery worker
processes); latency runs from the call to its completion (direct: the future resolves; http:
POST -> the task's ``done`` event is pushed). The HTTP side additionally stores every result
as a durable mask version: that is part of what the API costs. The timed HTTP client is a
thin ``http.client`` loop (keep-alive, chunked SSE read line by line), so the benchmark's
own client, which shares the machine's cores with the server, steals as little CPU as it can.
The modes run in interleaved rounds (``--repeat``: direct, embedded, celery, direct, ...)
with every server started once and kept warm, so a machine whose load drifts (shared CI)
skews all modes alike instead of whichever ran last.

    .venv/bin/python benchmarks/bench_api.py [--clients 8] [--n2d 10] [--n3d 3] [--workers 2]
        [--image ../shared/data/totalseg/example_ct_sm.nii.gz] [--no-celery]
        [--modes embedded,emb-procs,celery] [--repeat 1] [--one-request]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
RUN_CMD = (
    "import argparse, sys; from segloop.cli import serve, worker; p = argparse.ArgumentParser(); "
    "s = p.add_subparsers(); [m.register(s) for m in (serve, worker)]; "
    "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prompt(image: Path) -> tuple[int, list[int]]:
    """A box around the liver (label 5) when the TotalSegmentator example is used, else centre."""
    import nibabel as nib

    seg = image.parent / "example_seg.nii.gz"
    if seg.exists() and image.name == "example_ct_sm.nii.gz":
        lab = np.asarray(nib.load(str(seg)).dataobj) == 5  # type: ignore[attr-defined]
        z = int(np.argmax(lab.sum(axis=(0, 1))))
        xs, ys = np.nonzero(lab[:, :, z])
        return z, [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
    shape = nib.load(str(image)).shape  # type: ignore[attr-defined]
    return shape[2] // 2, [shape[0] // 4, shape[1] // 4, 3 * shape[0] // 4, 3 * shape[1] // 4]


def pct(v: list[float]) -> tuple[float, float]:
    a = np.asarray(v) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 95))


def closed_loop(clients: int, n: int, one: Callable[[int], None]) -> list[float]:
    """``clients`` threads each calling ``one(i)`` ``n`` times back to back; the latencies."""
    lat: list[float] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        for _ in range(n):
            t0 = time.perf_counter()
            one(i)
            with lock:
                lat.append(time.perf_counter() - t0)

    ths = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    return lat


# ---------------------------------------------------------------------------- direct
class Direct:
    """The engine called in-process: one warm session per client, W pool threads."""

    def __init__(self, image: Path, clients: int, workers: int) -> None:
        from segloop.engines import get_engine
        from segloop.io import load_volume
        from segloop.types import Prompts

        self.z, box = prompt(image)
        self.prompts = Prompts.make(box)
        vol = load_volume(image)
        engine = get_engine("classic")
        self.sessions = [engine.open(vol) for _ in range(clients)]
        for s in self.sessions:
            s.segment_slice(self.z, self.prompts)
        self.pool = ThreadPoolExecutor(workers)
        self.clients = clients

    def run(self, kind: str, n: int) -> tuple[list[float], float, float]:
        """Latencies of ``clients`` x ``n`` calls, CPU s per call (this process), 0."""
        from segloop.engines import drive

        def call(i: int) -> None:
            s = self.sessions[i]
            if kind == "2d":
                s.segment_slice(self.z, self.prompts)
            else:
                drive(s.propagate(self.z))

        cpu0 = time.process_time()
        lat = closed_loop(self.clients, n, lambda i: self.pool.submit(call, i).result())
        return lat, (time.process_time() - cpu0) / max(len(lat), 1), 0.0


_PROC: dict[str, Any] = {}


def _proc_init(image: str, clients: int) -> None:
    """Pool process start: open and warm one session per client."""
    from segloop.engines import get_engine
    from segloop.io import load_volume
    from segloop.types import Prompts

    z, box = prompt(Path(image))
    vol = load_volume(Path(image))
    engine = get_engine("classic")
    _PROC.update(z=z, prompts=Prompts.make(box),
                 sessions=[engine.open(vol) for _ in range(clients)])
    for s in _PROC["sessions"]:
        s.segment_slice(z, _PROC["prompts"])


def _proc_call(i: int, kind: str) -> None:
    from segloop.engines import drive

    s = _PROC["sessions"][i]
    if kind == "2d":
        s.segment_slice(_PROC["z"], _PROC["prompts"])
    else:
        drive(s.propagate(_PROC["z"]))


class DirectProcs:
    """The engine called in W worker processes (like W Celery workers), no HTTP."""

    def __init__(self, image: Path, clients: int, workers: int) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.clients = clients
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_proc_init, initargs=(str(image), clients))
        for f in [self.pool.submit(time.sleep, 0.5) for _ in range(workers * 2)]:
            f.result()  # every process started and warm
        self.pids = list(self.pool._processes)

    def run(self, kind: str, n: int) -> tuple[list[float], float, float]:
        """Latencies, CPU s per call of the pool processes, 0."""
        s0 = server_cpu(self.pids)
        lat = closed_loop(self.clients, n,
                          lambda i: self.pool.submit(_proc_call, i, kind).result())
        return lat, (server_cpu(self.pids) - s0) / max(len(lat), 1), 0.0

    def close(self) -> None:
        self.pool.shutdown()


# ---------------------------------------------------------------------------- http
def wait_health(base: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stdout.read().decode() if proc.stdout else ''}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


def run_task(c: http.client.HTTPConnection, jid: str, path: str, body: dict[str, Any],
             one_request: bool = False) -> None:
    """POST a task, then follow its Server-Sent Events until the terminal one (with
    ``one_request``: the POST itself answers with the events, ``Accept: text/event-stream``)."""
    headers = {"Content-Type": "application/json"}
    if one_request:
        headers["Accept"] = "text/event-stream"
    c.request("POST", f"/api/v1/jobs/{jid}/{path}", body=json.dumps(body), headers=headers)
    if one_request:
        ev = c.getresponse()
        if ev.status != 200:
            raise RuntimeError(f"submit failed: {ev.status} {ev.read()!r}")
    else:
        r = c.getresponse()
        data = r.read()
        if r.status != 202:
            raise RuntimeError(f"submit failed: {r.status} {data!r}")
        c.request("GET", json.loads(data)["events"])
        ev = c.getresponse()
    last = None
    while True:
        line = ev.readline()
        if not line:
            break
        if line.startswith(b"data: "):
            last = json.loads(line[6:])
    ev.read()
    if not last or last.get("type") != "done":
        raise RuntimeError(f"task did not succeed: {last}")


def server_cpu(pids: list[int]) -> float:
    """User + system CPU seconds used so far by the server/worker processes (and children)."""
    total = 0.0
    for pid in pids:
        try:
            p = psutil.Process(pid)
            for q in [p, *p.children(recursive=True)]:
                t = q.cpu_times()
                total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


class Http:
    """A running server: one uploaded job per client, sessions warmed by a first prompt."""

    def __init__(self, base: str, image: Path, clients: int, pids: list[int],
                 one_request: bool = False) -> None:
        self.one_request = one_request
        self.z, self.box = prompt(image)
        self.host, port = base.removeprefix("http://").split(":")
        self.port, self.pids = int(port), pids
        self.jobs: list[str] = []
        with httpx.Client(base_url=base, timeout=120) as c:
            for _ in range(clients):
                r = c.post("/api/v1/jobs", files={"file": (image.name, image.read_bytes())})
                r.raise_for_status()
                self.jobs.append(r.json()["job_id"])
        self.conns = self._connect()
        for conn, jid in zip(self.conns, self.jobs, strict=True):  # warm, as on the direct side
            run_task(conn, jid, "initial-mask", {"slice_index": self.z, "box": self.box})
        self.close()

    def _connect(self) -> list[http.client.HTTPConnection]:
        """One open keep-alive connection per client (connected before any timing)."""
        conns = [http.client.HTTPConnection(self.host, self.port, timeout=300)
                 for _ in self.jobs]
        for c in conns:
            c.connect()
        return conns

    def run(self, kind: str, n: int) -> tuple[list[float], float, float]:
        """Latencies, server CPU s per request, client CPU s per request."""
        def one(i: int) -> None:
            if kind == "2d":
                run_task(self.conns[i], self.jobs[i], "initial-mask",
                         {"slice_index": self.z, "box": self.box}, self.one_request)
            else:
                run_task(self.conns[i], self.jobs[i], "propagate", {}, self.one_request)

        self.conns = self._connect()  # idle keep-alive connections expire between rounds
        s0, c0 = server_cpu(self.pids), time.process_time()
        lat = closed_loop(len(self.jobs), n, one)
        self.close()
        k = max(len(lat), 1)
        return lat, (server_cpu(self.pids) - s0) / k, (time.process_time() - c0) / k

    def close(self) -> None:
        for c in self.conns:
            c.close()


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", RUN_CMD, *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--image", type=Path,
                    default=ROOT / ".." / "shared" / "data" / "totalseg" / "example_ct_sm.nii.gz")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--n2d", type=int, default=10, help="2D prompts per client per round")
    ap.add_argument("--n3d", type=int, default=3, help="propagations per client per round")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="interleaved rounds of every mode")
    ap.add_argument("--no-celery", action="store_true")
    ap.add_argument("--modes", default="embedded,emb-procs,celery",
                    help="HTTP modes to run (comma-separated: embedded, emb-procs, celery)")
    ap.add_argument("--database-url", help="job store for celery mode (default SQLite)")
    ap.add_argument("--one-request", action="store_true",
                    help="each step is one POST answered with its event stream (Accept: "
                         "text/event-stream) instead of a POST and a GET of the events")
    a = ap.parse_args()
    if not a.image.exists():
        raise SystemExit(f"image not found: {a.image}")
    modes = a.modes.split(",")
    if a.no_celery or not shutil.which("redis-server"):
        modes = [m for m in modes if m != "celery"]
    runners: dict[str, Any] = {"direct": Direct(a.image, a.clients, a.workers)}
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "SEGLOOP_HOME": f"{tmp}/emb", "SEGLOOP_DEFAULT_ENGINE": "classic",
               "SEGLOOP_LOG_LEVEL": "WARNING", "SEGLOOP_WORKERS": str(a.workers)}
        try:
            if "embedded" in modes:
                port = free_port()
                srv = start(["serve", "--port", str(port)], env)
                procs.append(srv)
                wait_health(f"http://127.0.0.1:{port}", srv)
                runners["http/embedded"] = Http(f"http://127.0.0.1:{port}", a.image, a.clients,
                                                [srv.pid], a.one_request)
            if "emb-procs" in modes:
                port = free_port()
                penv = {**env, "SEGLOOP_HOME": f"{tmp}/procs", "SEGLOOP_WORKERS": "1",
                        "SEGLOOP_EMBEDDED_PROCESSES": str(a.workers)}
                srv = start(["serve", "--port", str(port)], penv)
                procs.append(srv)
                wait_health(f"http://127.0.0.1:{port}", srv)
                runners["http/emb-procs"] = Http(f"http://127.0.0.1:{port}", a.image, a.clients,
                                                 [srv.pid], a.one_request)
            if "celery" in modes or "emb-procs" in modes:
                runners["direct/procs"] = DirectProcs(a.image, a.clients, a.workers)
            if "celery" in modes:
                rport = free_port()
                redis = subprocess.Popen(["redis-server", "--port", str(rport), "--save", "",
                                          "--appendonly", "no"], stdout=subprocess.DEVNULL)
                procs.append(redis)
                cenv = {**env, "SEGLOOP_HOME": f"{tmp}/cel", "SEGLOOP_QUEUE": "celery",
                        "SEGLOOP_REDIS_URL": f"redis://127.0.0.1:{rport}/0"}
                if a.database_url:
                    cenv["SEGLOOP_DATABASE_URL"] = a.database_url
                port = free_port()
                cel = [start(["worker"], cenv) for _ in range(a.workers)]
                cel.append(start(["serve", "--port", str(port), "--queue", "celery"], cenv))
                procs.extend(cel)
                wait_health(f"http://127.0.0.1:{port}", cel[-1])
                time.sleep(2)  # let the workers connect
                runners["http/celery"] = Http(f"http://127.0.0.1:{port}", a.image, a.clients,
                                              [p.pid for p in cel] + [redis.pid],
                                              a.one_request)
            results: dict[str, dict[str, list[float]]] = {m: {"2d": [], "3d": []}
                                                          for m in runners}
            cpus: dict[str, dict[str, list[tuple[float, float, int]]]] = {
                m: {"2d": [], "3d": []} for m in runners}
            for _ in range(a.repeat):
                for kind, n in (("2d", a.n2d), ("3d", a.n3d)):
                    for mode, r in runners.items():
                        lat, srv_cpu, cli_cpu = r.run(kind, n)
                        results[mode][kind] += lat
                        cpus[mode][kind].append((srv_cpu, cli_cpu, len(lat)))
        finally:
            for r in runners.values():
                if isinstance(r, Http | DirectProcs):
                    r.close()
            stop(procs)
    print(f"\n{a.clients} concurrent clients, {a.workers} workers, {a.repeat} round(s), "
          f"image {a.image.name}")
    print(f"{'mode':<15} {'task':<12} {'n':>4} {'p50 ms':>9} {'p95 ms':>9} "
          f"{'p50 ratio':>9} {'p50 +ms':>9} {'p95 +ms':>9} {'cpu ms':>8} {'client':>7}")
    for mode, per in results.items():
        for kind in ("2d", "3d"):
            p50, p95 = pct(per[kind])
            base = "direct/procs" if mode in ("http/celery", "http/emb-procs") else "direct"
            d50, d95 = pct(results[base][kind])
            k = sum(n for _, _, n in cpus[mode][kind]) or 1
            srv_cpu = sum(c * n for c, _, n in cpus[mode][kind]) / k
            cli_cpu = sum(c * n for _, c, n in cpus[mode][kind]) / k
            label = "2D prompt" if kind == "2d" else "propagation"
            print(f"{mode:<15} {label:<12} {len(per[kind]):>4} {p50:>9.1f} {p95:>9.1f} "
                  f"{p50 / d50:>9.2f} {p50 - d50:>9.1f} {p95 - d95:>9.1f} "
                  f"{srv_cpu * 1e3:>8.1f} {cli_cpu * 1e3:>7.1f}")
    print("ratio/+ms: embedded vs direct (threads), celery and emb-procs vs direct/procs "
          "(processes); "
          "cpu ms: CPU per request of the\ndirect process (pool processes) / the server "
          "(+ workers, redis); client: the benchmark's HTTP client")
    return 0


if __name__ == "__main__":
    sys.exit(main())
