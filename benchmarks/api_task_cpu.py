"""The service's own CPU per task: one client's 2D prompts through ``segloop serve``, minus the
engine's CPU for the same call, for one or more source trees side by side.

Latency under many clients on a shared machine is mostly queueing behind CPU; the CPU a task
costs the server outside the engine is the figure that does not depend on the machine's load
(see docs/speed.md, "The API's own cost"). Each tree (``--tree``: a checkout's root, default
this one; ``ROOT,DIR`` adds DIR to that server's PYTHONPATH, e.g. a ``pip install --target``
folder with optional packages; ``ROOT+1`` makes each step one POST answered with its events,
``--one-request`` of bench_api.py) gets its own warm embedded server (``SEGLOOP_WORKERS=1``,
classic engine, one job of the TotalSegmentator example CT); blocks of ``--n`` sequential 2D
prompts (submit, then the events until ``done``, as benchmarks/bench_api.py) go to each server
in turn, ``--rounds`` times, so load drift hits every tree alike. Printed per tree: the median
over rounds of the server's CPU ms per task (all threads; the event-loop thread apart), the
engine's CPU ms per call (measured in this process between the blocks) and their difference,
the service's CPU.

    PYTHONPATH=src python benchmarks/api_task_cpu.py [--tree ../old-checkout --tree .
        --tree .,/tmp/uvextra] [--n 100] [--rounds 5]
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

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_api as b

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / ".." / "shared" / "data" / "totalseg" / "example_ct_sm.nii.gz"


def engine_cpu_ms(n: int) -> float:
    """CPU ms of one classic 2D prompt on a warm session, in this process (this tree's code)."""
    from segloop.engines import get_engine
    from segloop.io import load_volume
    from segloop.types import Prompts

    z, box = b.prompt(IMAGE)
    prompts = Prompts.make(box)
    s = get_engine("classic").open(load_volume(IMAGE))
    s.segment_slice(z, prompts)
    c0 = time.process_time()
    for _ in range(n):
        s.segment_slice(z, prompts)
    return (time.process_time() - c0) / n * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tree", action="append",
                    help="a checkout's root, or ROOT,DIR to add DIR to its PYTHONPATH "
                         "(repeatable)")
    ap.add_argument("--n", type=int, default=100, help="2D prompts per block")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    trees = a.tree or [str(ROOT)]
    procs: list[subprocess.Popen[bytes]] = []
    cpu: dict[str, list[float]] = {t: [] for t in trees}
    loop: dict[str, list[float]] = {t: [] for t in trees}
    eng: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            runners = {}
            for i, tree in enumerate(trees):
                root, _, extra = tree.partition(",")
                one = root.endswith("+1")  # ROOT+1: one request per step
                root = root.removesuffix("+1")
                pp = str(Path(root).resolve() / "src") + (os.pathsep + extra if extra else "")
                env = {**os.environ, "PYTHONPATH": pp, "SEGLOOP_HOME": f"{tmp}/h{i}",
                       "SEGLOOP_DEFAULT_ENGINE": "classic", "SEGLOOP_LOG_LEVEL": "WARNING",
                       "SEGLOOP_WORKERS": "1"}
                port = b.free_port()
                p = b.start(["serve", "--port", str(port)], env)
                procs.append(p)
                b.wait_health(f"http://127.0.0.1:{port}", p)
                runners[tree] = (b.Http(f"http://127.0.0.1:{port}", IMAGE, 1, [p.pid], one),
                                 p.pid)
            for _ in range(a.rounds):
                eng.append(engine_cpu_ms(max(a.n // 4, 10)))
                for tree, (h, pid) in runners.items():
                    h.run("2d", 5)  # warm the connection and caches
                    main_thread = psutil.Process(pid).threads()
                    m0 = next(t.user_time + t.system_time for t in main_thread if t.id == pid)
                    _lat, srv, _cli = h.run("2d", a.n)
                    m1 = next(t.user_time + t.system_time
                              for t in psutil.Process(pid).threads() if t.id == pid)
                    cpu[tree].append(srv * 1e3)
                    loop[tree].append((m1 - m0) / a.n * 1e3)
        finally:
            b.stop(procs)
    e = statistics.median(eng)
    print(f"\n{a.rounds} rounds x {a.n} sequential 2D prompts per tree, 1 client, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"engine CPU per call (this process): median {e:.2f} ms "
          f"({', '.join(f'{x:.1f}' for x in eng)})")
    print(f"{'tree':<44} {'server ms':>10} {'event loop':>10} {'service ms':>10}  rounds")
    for tree in trees:
        s = statistics.median(cpu[tree])
        print(f"{tree[-44:]:<44} {s:>10.2f} {statistics.median(loop[tree]):>10.2f} "
              f"{s - e:>10.2f}  {', '.join(f'{x:.1f}' for x in cpu[tree])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
