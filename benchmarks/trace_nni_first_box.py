"""Where the nnInteractive first box's wall time goes: one phase at a time, client to client.

Starts ``segloop serve`` from a tree (``--src``; default this one) with timing wrappers around
the service's functions on the first box's path (the wrappers append one line per call to a
file; ``time.perf_counter`` is the system's monotonic clock, so the client's and the
server's stamps compare), then drives fresh leases with the real client
(``nnInteractiveRemoteInferenceSession``: set_image, set_target_buffer, one 2D box) and prints
the median of each phase of the box's wait, in order: the client's send to the lease lookup,
up to the task's submit, the claim, the engine session, the engine step, the label map's
hand-off to the request, the version's completion (encoding, rows, the durable write and the
commit), the ``done`` event and the answer's way back. The wrappers add a few microseconds
each (and a line written to a file), so the total is a little above an untraced server's;
compare trees with this script on both, alternated (one tree per run).

    PYTHONPATH=src .venv/bin/python benchmarks/trace_nni_first_box.py [--src OLD/src] [--n 15]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
IMAGE = ROOT / ".." / "shared" / "data" / "totalseg" / "example_ct_sm.nii.gz"
BOX, Z = (44, 27, 104, 81), 24


def _install(out_path: str) -> None:
    """In the server process: wrap the functions the phases are cut at."""
    from segloop.jobs import files, handoff, runner, store_tasks, store_versions
    from segloop.protocols import nni_lease, nninteractive, tasks

    out = open(out_path, "a", buffering=1)  # noqa: SIM115 - open for the server's life
    lock = threading.Lock()

    def stamp(label: str, t0: float, t1: float) -> None:
        with lock:
            out.write(f"{label}\t{t0:.6f}\t{t1:.6f}\n")

    def wrap(owner: Any, name: str, label: str) -> None:
        f: Callable[..., Any] = getattr(owner, name)

        @functools.wraps(f)
        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                stamp(label, t0, time.perf_counter())
        setattr(owner, name, timed)

    try:  # the lease lookup: in nni_state since ee6b08f, in nninteractive before
        from segloop.protocols import nni_state
        wrap(nni_state, "lease_ref", "lease")
    except ImportError:
        wrap(nninteractive, "_lease_ref", "lease")
    wrap(nninteractive, "_answer", "answer")
    wrap(tasks, "_submit_then", "submit")
    wrap(store_tasks.TaskStore, "claim", "claim")
    wrap(runner.Runtime, "session_for", "session")
    wrap(runner.Runtime, "_run_step", "step")
    wrap(runner.Runtime, "_published", "published")
    wrap(handoff.LabelHandoff, "offer", "offer")
    wrap(store_versions.VersionStore, "complete_task", "complete")
    wrap(files, "encode_labels", "encode")
    wrap(nni_lease.Lease, "diff_to", "diff")


#: (phase, from (label, 0 start | 1 end), to (label, 0 | 1)); "client" is the client's stamps
PHASES = [
    ("client send -> lease lookup", ("client", 0), ("lease", 0)),
    ("lease lookup -> task submit", ("lease", 0), ("submit", 0)),
    ("submit -> worker's claim", ("submit", 0), ("claim", 0)),
    ("claim -> engine step (session open inside)", ("claim", 0), ("step", 0)),
    ("  of which the engine session", ("session", 0), ("session", 1)),
    ("engine step (the engine, progress)", ("step", 0), ("step", 1)),
    ("step end -> complete_task", ("step", 1), ("complete", 0)),
    ("complete_task (encode, rows, fsync, commit)", ("complete", 0), ("complete", 1)),
    ("  of which the encoding", ("encode", 0), ("encode", 1)),
    ("  offer -> the answer's diff starts", ("offer", 0), ("diff", 0)),
    ("complete_task end -> done published", ("complete", 1), ("published", 0)),
    ("done published -> answer", ("published", 0), ("answer", 0)),
    ("answer -> the client has it", ("answer", 0), ("client", 1)),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", type=Path, default=ROOT / "src", help="the server's src folder")
    ap.add_argument("--n", type=int, default=15, help="first boxes (fresh leases)")
    ap.add_argument("--image", type=Path, default=IMAGE)
    a = ap.parse_args()
    sys.path.insert(0, str(HERE.parent))
    import numpy as np
    from bench_protocols import _port, wait_up
    from nnInteractive.inference.remote import nnInteractiveRemoteInferenceSession

    from segloop.io import load_volume

    can = load_volume(a.image).canonical()
    arr = np.asarray(can.data, np.float32)[None]
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.tsv"
        port = _port()
        env = {**os.environ, "SEGLOOP_HOME": f"{tmp}/home", "SEGLOOP_DEFAULT_ENGINE": "classic",
               "SEGLOOP_LOG_LEVEL": "WARNING", "PYTHONPATH": f"{a.src.resolve()}:{HERE.parent}"}
        code = ("import sys, trace_nni_first_box as t; t._install(sys.argv[1]); "
                "from segloop.cli import main; sys.exit(main(sys.argv[2:]))")
        proc = subprocess.Popen([sys.executable, "-c", code, str(trace), "serve", "--port",
                                 str(port)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        windows: list[tuple[float, float]] = []
        try:
            wait_up(url)
            for i in range(a.n + 1):  # the first lease warms the server (engine imports)
                with nnInteractiveRemoteInferenceSession(f"{url}/nninteractive") as s:
                    s.set_image(arr, {"spacing": list(can.spacing)})
                    s.set_target_buffer(np.zeros(arr.shape[1:], np.uint8))
                    time.sleep(0.05)  # set_image's background work settles
                    t0 = time.perf_counter()
                    s.add_bbox_interaction([[BOX[0], BOX[2] + 1], [BOX[1], BOX[3] + 1],
                                            [Z, Z + 1]], True)
                    t1 = time.perf_counter()
                    time.sleep(0.05)  # the worker's last stamps are written
                    if i:
                        windows.append((t0, t1))
        finally:
            proc.terminate()
            proc.wait(timeout=20)
        rows = [(lab, float(b), float(e)) for lab, b, e in
                (line.split("\t") for line in trace.read_text().splitlines())]
    load = os.getloadavg()[0]
    phases: dict[str, list[float]] = {p[0]: [] for p in PHASES}
    total = []
    for t0, t1 in windows:
        first: dict[str, tuple[float, float]] = {"client": (t0, t1)}
        for lab, b, e in rows:
            if t0 <= b <= t1 + 0.05 and lab not in first:
                first[lab] = (b, e)
        total.append((t1 - t0) * 1e3)
        for name, (fa, fi), (ta, ti) in PHASES:
            if fa in first and ta in first:
                phases[name].append((first[ta][ti] - first[fa][fi]) * 1e3)
    med = statistics.median
    print(f"server {a.src}; {len(total)} first boxes; load {load:.1f}; medians, ms")
    print(f"{'the client waits (whole box)':46s} {med(total):8.2f}")
    for name, v in phases.items():
        print(f"{name:46s} {med(v):8.2f}" if v else f"{name:46s}        -")


if __name__ == "__main__":
    main()
