"""Two segloop trees side by side, call by call: the same client calls alternate between them.

On a shared machine whose load swings between runs, two separate runs of
bench_protocols.py cannot resolve a few tens of milliseconds. This starts one ``segloop
serve`` from each tree (e.g. ``git archive`` of the commit before a change, and this one)
and alternates every call between them (A then B, B then A, ...), so both see the same
load; it reports each side's median, the median of the paired differences (B - A) and the
server process's mean CPU time per call (from /proc: the API, the embedded worker and the engine
all run in it). Cases: a MONAI Label ``/infer`` with a new ROI on a session (clear + new 3D
mask + result file; the first call of each side warms its engine session), beside the same
engine work in this process (clear + segment + propagate on an open session), and
nnInteractive's first box of a fresh lease (image upload not counted: the box's wait only),
beside the engine in this process two ways: (b) open + segment + propagate on a fresh session
(what the server does for the first box: it opens the job's session then), and (a) segment +
propagate on a session opened just before, untimed (what a server that opened the session at
``set_image`` would leave to the box; the classic engine's lazy per-volume statistics are
still in it). Also the lease's ``set_image`` (the packed image upload) old vs new, since a
change that moves work from the first box to ``set_image`` must show it there.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_protocols_ab.py OLD_TREE/src [--b src]
        [--n 15] [--n-first 5] [--image ../shared/data/totalseg/example_ct_sm.nii.gz]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _serve(src: Path, home: Path) -> tuple[subprocess.Popen[bytes], str]:
    from bench_protocols import RUN, _port, wait_up

    port = _port()
    env = {**os.environ, "SEGLOOP_HOME": str(home), "SEGLOOP_DEFAULT_ENGINE": "classic",
           "SEGLOOP_LOG_LEVEL": "WARNING", "PYTHONPATH": str(src.resolve())}
    proc = subprocess.Popen([sys.executable, "-c", RUN, "serve", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    if wait_up(url):
        return proc, url
    raise SystemExit(f"segloop serve from {src} did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", type=Path, help="tree A's src folder (e.g. the commit before)")
    ap.add_argument("--b", type=Path, default=ROOT / "src", help="tree B's src (this tree)")
    ap.add_argument("--n", type=int, default=15, help="MONAI Label calls per side")
    ap.add_argument("--n-first", type=int, default=5, help="nnInteractive first boxes per side")
    ap.add_argument("--image", type=Path,
                    default=ROOT / ".." / "shared" / "data" / "totalseg" / "example_ct_sm.nii.gz")
    a = ap.parse_args()
    sys.path.insert(0, str(HERE))  # the helpers of bench_protocols.py beside this file
    import numpy as np
    from bench_protocols import BOX, BOX2, Z, _cpu_ms, nni
    from monailabel.client import MONAILabelClient

    from segloop.engines import get_engine
    from segloop.engines.base import drive
    from segloop.io import load_volume
    from segloop.types import Prompts

    vol = load_volume(a.image)
    eng = get_engine("classic")
    sess = eng.open(vol)  # the engine in this process

    def engine_first(b: tuple[int, int, int, int]) -> tuple[float, float]:
        """A first box on a fresh session: (open + segment + propagate, segment + propagate)
        in ms."""
        t0 = time.perf_counter()
        fresh = eng.open(vol)
        t1 = time.perf_counter()
        fresh.segment_slice(Z, Prompts.make(b))
        drive(fresh.propagate(Z))
        t2 = time.perf_counter()
        return (t2 - t0) * 1e3, (t2 - t1) * 1e3

    can = vol.canonical()
    arr = np.asarray(can.data, np.float32)[None]

    def first_box(url: str) -> tuple[float, float]:
        """A fresh lease: (set_image, first box) wall ms, as the client waits for them."""
        from nnInteractive.inference.remote import nnInteractiveRemoteInferenceSession

        with nnInteractiveRemoteInferenceSession(f"{url}/nninteractive") as s:
            t0 = time.perf_counter()
            s.set_image(arr, {"spacing": list(can.spacing)})
            t1 = time.perf_counter()
            buf = np.zeros(arr.shape[1:], np.uint8)
            s.set_target_buffer(buf)
            t2 = time.perf_counter()
            s.add_bbox_interaction([[BOX[0], BOX[2] + 1], [BOX[1], BOX[3] + 1], [Z, Z + 1]],
                                   True)
            t3 = time.perf_counter()
            assert buf.sum() > 0
        return (t1 - t0) * 1e3, (t3 - t2) * 1e3

    def engine(b: tuple[int, int, int, int]) -> None:  # what a new ROI asks of the worker
        sess.set_mask(np.zeros(sess.shape, bool))
        sess.segment_slice(Z, Prompts.make(b))
        drive(sess.propagate(Z))

    sides = {"A": a.a, "B": a.b}
    wall: dict[str, list[float]] = {"A": [], "B": [], "E": []}
    cpu: dict[str, list[float]] = {"A": [], "B": [], "E": []}
    first: dict[str, list[float]] = {"A": [], "B": [], "E": []}
    opened: dict[str, list[float]] = {"A": [], "B": [], "E": []}  # E: engine on an open session
    upload: dict[str, list[float]] = {"A": [], "B": []}
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        procs, urls, clients, sids = {}, {}, {}, {}
        try:
            for k, src in sides.items():
                procs[k], urls[k] = _serve(src, Path(tmp) / f"home-{k}")
                nni(urls[k], a.image, 1)  # warm: engine imports, first task, caches
                clients[k] = MONAILabelClient(f"{urls[k]}/monailabel", tmpdir=tmp)
                sids[k] = clients[k].create_session(str(a.image))["session_id"]
            for i in range(a.n + 1):
                b = BOX2 if i % 2 else BOX
                params = {"roi": [[b[0], b[2]], [b[1], b[3]], [0, 10_000]], "foreground": [],
                          "background": []}
                for k in ("A", "B") if i % 2 else ("B", "A"):
                    c0 = _cpu_ms(procs[k].pid)
                    t0 = time.perf_counter()
                    clients[k].infer("classic", sids[k], dict(params), session_id=sids[k])
                    if i:  # the first call of each side warms its session
                        wall[k].append((time.perf_counter() - t0) * 1e3)
                        cpu[k].append(_cpu_ms(procs[k].pid) - c0)
                t0, c0 = time.perf_counter(), time.process_time()
                engine(b)
                if i:
                    wall["E"].append((time.perf_counter() - t0) * 1e3)
                    cpu["E"].append((time.process_time() - c0) * 1e3)
            for j in range(a.n_first):
                for k in ("A", "B") if j % 2 else ("B", "A"):
                    up, box = first_box(urls[k])
                    upload[k].append(up)
                    first[k].append(box)
                    opened[k].append(box)
                whole, segment = engine_first(BOX)
                first["E"].append(whole)
                opened["E"].append(segment)
        finally:
            for p in procs.values():
                p.terminate()
                p.wait(timeout=20)
    med = statistics.median
    print(f"A {a.a}\nB {a.b}\nimage {a.image.name}; load {load0:.1f} -> "
          f"{os.getloadavg()[0]:.1f}; medians, ms")
    print(f"{'case':44s} {'A':>8s} {'B':>8s} {'B-A paired':>11s} {'engine':>8s} "
          f"{'B/engine':>9s} {'B-engine':>9s}")
    mean = statistics.fmean
    for name, d, avg in (("MONAI Label infer, new ROI (wall)", wall, med),
                         ("MONAI Label infer, new ROI (CPU, mean)", cpu, mean),
                         ("nnInteractive first box (b: engine opens)", first, med),
                         ("nnInteractive first box (a: engine open)", opened, med),
                         ("nnInteractive set_image (wall)", upload, med)):
        diff = avg([y - x for x, y in zip(d["A"], d["B"], strict=True)])
        eng = (f"{avg(d['E']):8.1f} {avg(d['B']) / avg(d['E']):9.2f} "
               f"{avg(d['B']) - avg(d['E']):+9.1f}") if d.get("E") else ""
        print(f"{name:44s} {avg(d['A']):8.1f} {avg(d['B']):8.1f} {diff:+11.1f} {eng}")
    print("engine: clear + segment + propagate on an open classic session in this process, "
          "alternated with the calls (wall; CPU of this process); for the first box, (b) open "
          "+ segment + propagate on a fresh session, (a) segment + propagate on a session "
          "opened untimed just before (the same box times, a different engine figure). CPU "
          "rows are means: the server's CPU is read from /proc in 10 ms ticks, so a median is "
          "too coarse")


if __name__ == "__main__":
    main()
