"""What the protocol adapters add to the engine's own time: one box -> 3D mask, client vs direct.

Three ways to get the same 3D mask from one 2D box on a real CT (liver, slice 24):

- direct: the ``classic`` engine in this process on an open session: ``segment_slice`` +
  ``propagate`` (first box) or ``refine`` (a later box, the repeat case);
- nnInteractive: ``nnInteractiveRemoteInferenceSession.add_bbox_interaction`` against
  ``segloop serve`` -- the client's whole wait, including the changed-box diff it applies to
  its buffer;
- segloop's own REST API: ``POST .../refine`` + Server-Sent Events until ``done``, on the
  lease's job, interleaved with the nnInteractive repeats: what the protocol adds on top of
  segloop's own API is the last row;
- MONAI Label: ``MONAILabelClient.infer`` (model ``classic``, the ROI as box, a session
  upload, a new ROI each call) -- the whole wait including the result file on the upload's
  grid, against both the engine's open + segment + propagate and, what the worker really
  does with its cached session, clear + segment + propagate on an open session; plus the
  server process's CPU time per call (from /proc).

The first box of a lease includes opening the job's engine session (the job itself is
ingested during ``set_image``), so it is reported apart from repeats; one throwaway lease
warms the server first (engine imports), as the direct side warms its own; repeats
alternate two boxes so each call is a real refinement. Prints medians in ms and the ratio /
difference to direct. One client at a time: this measures latency, not throughput (see
bench_api.py for load).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_protocols.py [--n 7]
        [--image ../shared/data/totalseg/example_ct_sm.nii.gz] [--server-src OLD_TREE/src]
        [--monailabel-only]

``--server-src`` runs the server from another tree (e.g. ``git archive`` of an older commit):
run it and the default alternately to compare before and after on the same machine.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BOX = (44, 27, 104, 81)
BOX2 = (46, 29, 102, 79)
Z = 24
RUN = ("import sys; from segloop.cli import main; sys.exit(main(sys.argv[1:]))")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, tries: int = 600) -> bool:
    """Poll ``url``/health every 0.1 s until it answers 200; False after ``tries``."""
    for _ in range(tries):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            time.sleep(0.1)
    return False


def direct(image: Path, n: int, n_first: int
           ) -> tuple[list[float], list[float], list[float], list[float]]:
    """First boxes (open + segment + propagate, fresh sessions), repeat boxes (refine) and new
    ROIs on the open session (clear + segment + propagate: what a MONAI Label new ROI asks of
    a worker whose session is cached; wall and CPU), ms."""
    from segloop.engines import get_engine
    from segloop.engines.base import drive
    from segloop.io import load_volume
    from segloop.types import Prompts

    vol = load_volume(image)
    eng = get_engine("classic")
    eng.open(vol)  # warm imports
    firsts = []
    for _ in range(n_first):
        t0 = time.perf_counter()
        sess = eng.open(vol)
        sess.segment_slice(Z, Prompts.make(BOX))
        drive(sess.propagate(Z))
        firsts.append((time.perf_counter() - t0) * 1e3)
    reps = []
    for i in range(n):
        t0 = time.perf_counter()
        drive(sess.refine(Z, Prompts.make(BOX2 if i % 2 == 0 else BOX)))
        reps.append((time.perf_counter() - t0) * 1e3)
    news, news_cpu = [], []
    for i in range(n):
        b = BOX2 if i % 2 == 0 else BOX
        t0, c0 = time.perf_counter(), time.process_time()
        sess.set_mask(np.zeros(sess.shape, bool))
        sess.segment_slice(Z, Prompts.make(b))
        drive(sess.propagate(Z))
        news.append((time.perf_counter() - t0) * 1e3)
        news_cpu.append((time.process_time() - c0) * 1e3)
    return firsts, reps, news, news_cpu


def nni(url: str, image: Path, n: int) -> tuple[float, list[float], list[float]]:
    """First box of a fresh lease, then ``n`` repeat boxes, each followed by the same refine
    through segloop's own REST API on the lease's job (interleaved: same load for both)."""
    from nnInteractive.inference.remote import nnInteractiveRemoteInferenceSession

    from segloop.io import load_volume

    can = load_volume(image).canonical()
    arr = np.asarray(can.data, np.float32)[None]
    reps: list[float] = []
    rest: list[float] = []
    with nnInteractiveRemoteInferenceSession(f"{url}/nninteractive") as s, \
            httpx.Client(base_url=url, timeout=60) as http:
        s.set_image(arr, {"spacing": list(can.spacing)})
        buf = np.zeros(arr.shape[1:], np.uint8)
        s.set_target_buffer(buf)
        job = s.lease_status()["job_id"]

        def box(b: tuple[int, int, int, int]) -> float:
            t0 = time.perf_counter()
            s.add_bbox_interaction([[b[0], b[2] + 1], [b[1], b[3] + 1], [Z, Z + 1]], True)
            return (time.perf_counter() - t0) * 1e3

        def rest_refine(b: tuple[int, int, int, int]) -> float:
            t0 = time.perf_counter()
            t = http.post(f"/api/v1/jobs/{job}/refine",
                          json={"slice_index": Z, "box": list(b)}).json()
            with http.stream("GET", t["events"]) as ev:
                for line in ev.iter_lines():
                    if line.startswith("data: ") and '"type": "done"' in line:
                        break
            return (time.perf_counter() - t0) * 1e3

        first = box(BOX)
        assert buf.sum() > 0
        for _ in range(n):  # every call changes the box: B2 (nni), B (REST), B2 (nni), ...
            reps.append(box(BOX2))
            rest.append(rest_refine(BOX))
    return first, reps, rest


def _cpu_ms(pid: int) -> float:
    """CPU time (user + system, all threads) of process ``pid`` so far, ms (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1e3 / os.sysconf("SC_CLK_TCK")


def monailabel(url: str, image: Path, n: int, tmp: Path, pid: int
               ) -> tuple[list[float], float]:
    """``n + 1`` new-ROI infer calls (wall ms each) and the server's CPU ms per call over the
    last ``n`` (the first warms the session)."""
    from monailabel.client import MONAILabelClient

    c = MONAILabelClient(f"{url}/monailabel", tmpdir=str(tmp))
    sid = c.create_session(str(image))["session_id"]
    out = []
    for i in range(n + 1):
        b = BOX2 if i % 2 else BOX
        # the canonical box as file indices: this CT is stored RAS, so they are the same
        params = {"roi": [[b[0], b[2]], [b[1], b[3]], [0, 10_000]], "foreground": [],
                  "background": []}
        if i == 1:
            cpu0 = _cpu_ms(pid)
        t0 = time.perf_counter()
        c.infer("classic", sid, params, session_id=sid)
        out.append((time.perf_counter() - t0) * 1e3)
    return out, (_cpu_ms(pid) - cpu0) / max(n, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=7, help="repeat boxes / MONAI Label calls")
    ap.add_argument("--n-first", type=int, default=3, help="first boxes (fresh leases)")
    ap.add_argument("--image", type=Path,
                    default=ROOT / ".." / "shared" / "data" / "totalseg" / "example_ct_sm.nii.gz")
    ap.add_argument("--server-src", type=Path, default=ROOT / "src",
                    help="the src folder segloop serve runs from (an older tree's, to compare)")
    ap.add_argument("--monailabel-only", action="store_true",
                    help="only the MONAI Label rows (a shorter run, to alternate trees often)")
    a = ap.parse_args()
    d_first, d_reps, d_new, d_new_cpu = direct(a.image, a.n, a.n_first)
    with tempfile.TemporaryDirectory() as tmp:
        port = _port()
        env = {**os.environ, "SEGLOOP_HOME": f"{tmp}/home", "SEGLOOP_DEFAULT_ENGINE": "classic",
               "SEGLOOP_LOG_LEVEL": "WARNING", "PYTHONPATH": str(a.server_src.resolve())}
        proc = subprocess.Popen([sys.executable, "-c", RUN, "serve", "--port", str(port)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_up(url, 300)
            nni(url, a.image, 1)  # warm the server: engine imports, first task, caches
            n_first: list[float] = []
            n_reps: list[float] = []
            rest_reps: list[float] = []
            if not a.monailabel_only:
                for _ in range(a.n_first - 1):
                    n_first.append(nni(url, a.image, 0)[0])
                last, n_reps, rest_reps = nni(url, a.image, a.n)
                n_first.append(last)
            ml, ml_cpu = monailabel(url, a.image, a.n, Path(tmp), proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    med = statistics.median
    rows: list[tuple[str, float, float]] = [] if a.monailabel_only else [
        ("nnInteractive first box (session open)", med(n_first), med(d_first)),
        ("nnInteractive repeat box (refine)", med(n_reps), med(d_reps)),
        ("segloop REST refine + SSE done (same job)", med(rest_reps), med(d_reps)),
        ("nnInteractive repeat box vs REST refine", med(n_reps), med(rest_reps)),
    ]
    rows += [
        ("MONAI Label infer, roi (clear + new 3D mask)", med(ml[1:]), med(d_first)),
        ("MONAI Label infer, roi vs clear+segment+propagate", med(ml[1:]), med(d_new)),
    ]
    print(f"server {a.server_src}; load {os.getloadavg()[0]:.1f}")
    print(f"image {a.image.name}; box {BOX} on slice {Z}; n={a.n}, n_first={a.n_first}; "
          "medians in ms")
    print(f"{'case':48s} {'client':>9s} {'base':>9s} {'ratio':>7s} {'diff':>9s}")
    for name, c, d in rows:
        print(f"{name:48s} {c:9.1f} {d:9.1f} {c / d:7.2f} {c - d:+9.1f}")
    print(f"server CPU per MONAI Label new-ROI call: {ml_cpu:.1f} ms; the engine's "
          f"clear+segment+propagate: {med(d_new_cpu):.1f} ms CPU ({med(d_new):.1f} ms wall)")


if __name__ == "__main__":
    main()
