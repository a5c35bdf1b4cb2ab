"""What the service adds to the engine's own time: the same work through HTTP vs a direct call.

For a 2D prompt (initial-mask) and a 3D propagation, 8 concurrent clients each send N requests:

- direct: each client hands the engine call to a pool of W threads (the same parallelism as the
  service's workers) and waits for it: the engine's own time including queueing, no HTTP;
- http/embedded: ``segloop serve`` (W embedded worker threads); each request is submit ->
  Server-Sent Events until the task's ``done`` event (the result is pushed, never polled);
- http/celery: ``segloop serve --queue celery`` + W ``segloop worker`` processes + Redis.

Prints p50/p95 latency per mode and the HTTP/direct ratio and difference.

    .venv/bin/python benchmarks/bench_api.py [--clients 8] [--n2d 10] [--n3d 3] [--workers 2]
        [--image ../shared/data/totalseg/example_ct_sm.nii.gz] [--no-celery]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

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
        lab = np.asarray(nib.load(str(seg)).dataobj) == 5
        z = int(np.argmax(lab.sum(axis=(0, 1))))
        xs, ys = np.nonzero(lab[:, :, z])
        return z, [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
    shape = nib.load(str(image)).shape
    return shape[2] // 2, [shape[0] // 4, shape[1] // 4, 3 * shape[0] // 4, 3 * shape[1] // 4]


def pct(v: list[float]) -> tuple[float, float]:
    a = np.asarray(v) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 95))


# ---------------------------------------------------------------------------- direct
def bench_direct(image: Path, clients: int, n: int, workers: int, kind: str) -> list[float]:
    from segloop.engines import drive, get_engine
    from segloop.io import load_volume
    from segloop.types import Prompts

    z, box = prompt(image)
    vol = load_volume(image)
    engine = get_engine("classic")
    sessions = [engine.open(vol) for _ in range(clients)]
    for s in sessions:
        s.segment_slice(z, Prompts.make(box))
    pool = ThreadPoolExecutor(workers)
    lat: list[float] = []
    lock = threading.Lock()

    def call(i: int) -> None:
        s = sessions[i]
        if kind == "2d":
            s.segment_slice(z, Prompts.make(box))
        else:
            drive(s.propagate(z))

    def client(i: int) -> None:
        for _ in range(n):
            t0 = time.perf_counter()
            pool.submit(call, i).result()
            with lock:
                lat.append(time.perf_counter() - t0)

    ths = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    pool.shutdown()
    return lat


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


def run_task(c: httpx.Client, jid: str, path: str, body: dict[str, Any]) -> None:
    r = c.post(f"/api/v1/jobs/{jid}/{path}", json=body)
    r.raise_for_status()
    last = None
    with c.stream("GET", r.json()["events"]) as ev:
        for line in ev.iter_lines():
            if line.startswith("data: "):
                last = json.loads(line[6:])
    if not last or last.get("type") != "done":
        raise RuntimeError(f"task did not succeed: {last}")


def bench_http(base: str, image: Path, clients: int, n2d: int, n3d: int
               ) -> dict[str, list[float]]:
    z, box = prompt(image)
    jobs = []
    with httpx.Client(base_url=base, timeout=120) as c:
        for _ in range(clients):
            r = c.post("/api/v1/jobs", files={"file": (image.name, image.read_bytes())})
            r.raise_for_status()
            jid = r.json()["job_id"]
            run_task(c, jid, "initial-mask", {"slice_index": z, "box": box})  # warm sessions
            jobs.append(jid)
    out: dict[str, list[float]] = {"2d": [], "3d": []}
    lock = threading.Lock()

    def client(jid: str, kind: str, n: int) -> None:
        with httpx.Client(base_url=base, timeout=300) as c:
            for _ in range(n):
                t0 = time.perf_counter()
                if kind == "2d":
                    run_task(c, jid, "initial-mask", {"slice_index": z, "box": box})
                else:
                    run_task(c, jid, "propagate", {})
                with lock:
                    out[kind].append(time.perf_counter() - t0)

    for kind, n in (("2d", n2d), ("3d", n3d)):
        ths = [threading.Thread(target=client, args=(j, kind, n)) for j in jobs]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
    return out


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", RUN_CMD, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


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
    ap.add_argument("--n2d", type=int, default=10)
    ap.add_argument("--n3d", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-celery", action="store_true")
    ap.add_argument("--database-url", help="job store for celery mode (default SQLite)")
    a = ap.parse_args()
    if not a.image.exists():
        raise SystemExit(f"image not found: {a.image}")
    results: dict[str, dict[str, list[float]]] = {}
    results["direct"] = {k: bench_direct(a.image, a.clients, n, a.workers, k)
                         for k, n in (("2d", a.n2d), ("3d", a.n3d))}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "SEGLOOP_HOME": f"{tmp}/emb", "SEGLOOP_DEFAULT_ENGINE": "classic",
               "SEGLOOP_LOG_LEVEL": "WARNING", "SEGLOOP_WORKERS": str(a.workers)}
        port = free_port()
        srv = start(["serve", "--port", str(port)], env)
        try:
            wait_health(f"http://127.0.0.1:{port}", srv)
            results["http/embedded"] = bench_http(f"http://127.0.0.1:{port}", a.image, a.clients,
                                                  a.n2d, a.n3d)
        finally:
            stop([srv])
        if not a.no_celery and shutil.which("redis-server"):
            rport = free_port()
            redis = subprocess.Popen(["redis-server", "--port", str(rport), "--save", "",
                                      "--appendonly", "no"], stdout=subprocess.DEVNULL)
            cenv = {**env, "SEGLOOP_HOME": f"{tmp}/cel", "SEGLOOP_QUEUE": "celery",
                    "SEGLOOP_REDIS_URL": f"redis://127.0.0.1:{rport}/0"}
            if a.database_url:
                cenv["SEGLOOP_DATABASE_URL"] = a.database_url
            port = free_port()
            procs = [start(["worker"], cenv) for _ in range(a.workers)]
            procs.append(start(["serve", "--port", str(port), "--queue", "celery"], cenv))
            try:
                wait_health(f"http://127.0.0.1:{port}", procs[-1])
                time.sleep(2)  # let the workers connect
                results["http/celery"] = bench_http(f"http://127.0.0.1:{port}", a.image,
                                                    a.clients, a.n2d, a.n3d)
            finally:
                stop(procs)
                redis.terminate()
    print(f"\n{a.clients} concurrent clients, {a.workers} workers, image {a.image.name}")
    print(f"{'mode':<15} {'task':<12} {'n':>4} {'p50 ms':>9} {'p95 ms':>9} "
          f"{'p50 ratio':>9} {'p50 +ms':>9}")
    for mode, per in results.items():
        for kind in ("2d", "3d"):
            p50, p95 = pct(per[kind])
            d50, _ = pct(results["direct"][kind])
            label = "2D prompt" if kind == "2d" else "propagation"
            print(f"{mode:<15} {label:<12} {len(per[kind]):>4} {p50:>9.1f} {p95:>9.1f} "
                  f"{p50 / d50:>9.2f} {p50 - d50:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
