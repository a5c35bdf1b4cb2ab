"""The liver task most job tests run, and waiting for a task: shared by tests/jobs and tests/worker.

``liver_slice_box()`` is the axial slice of the shared example CT where the liver
(TotalSegmentator label 5) is largest, and the liver's box on it; ``wait_task`` polls a task
through the API until it has ended; ``watch_progress`` follows a task's events until it has
done some slices (to cancel or kill it mid-way).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import nibabel as nib
import numpy as np

from realdata import SHARED_DATA

__all__ = ["liver_slice_box", "wait_task", "watch_progress"]


def liver_slice_box() -> tuple[int, list[int]]:
    """(z, [x0, y0, x1, y1]) of the liver on its largest axial slice, canonical voxels."""
    lab = np.asarray(nib.load(str(SHARED_DATA / "totalseg/example_seg.nii.gz")).dataobj) == 5
    z = int(np.argmax(lab.sum(axis=(0, 1))))
    xs, ys = np.nonzero(lab[:, :, z])
    return z, [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


def wait_task(client: Any, job_id: str, task_id: str, timeout: float = 60) -> dict[str, Any]:
    """The task's record once it has succeeded, failed or been cancelled (an httpx or
    TestClient ``client``); AssertionError after ``timeout`` seconds."""
    t0 = time.monotonic()
    t: dict[str, Any] = {}
    while time.monotonic() - t0 < timeout:
        t = client.get(f"/api/v1/jobs/{job_id}/tasks/{task_id}").json()
        if t["state"] in ("succeeded", "failed", "cancelled"):
            return t
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish: {t}")


def watch_progress(client: Any, job_id: str, task_id: str, slices: int
                   ) -> tuple[threading.Event, threading.Thread]:
    """A started thread reading the task's event stream, and an event set once a progress
    event reports at least ``slices`` slices done. Join the thread after the task ends."""
    seen = threading.Event()

    def watch() -> None:
        with client.stream("GET", f"/api/v1/jobs/{job_id}/events",
                           params={"task_id": task_id}) as r:
            for line in r.iter_lines():
                if line.startswith("data: ") and json.loads(line[6:]).get(
                        "slices_done", 0) >= slices:
                    seen.set()

    th = threading.Thread(target=watch)
    th.start()
    return seen, th
