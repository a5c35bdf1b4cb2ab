"""The Objects list and its measurements follow every task and version, wherever it came from.

Issue 15: after a propagation, a MONAI Label infer or a task started in another tab, the side
panel kept the objects and measurements it had when the job was opened. Here the other client
is the API itself (what a second tab, a MONAI Label client or a script does): it segments and
propagates a new object, then stores a mask with a third one; the open page must list each new
object with the server's measurements of the version it shows, without a reload.
"""

from __future__ import annotations

import gzip
import re
import time
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np

from .conftest import LiveServer
from .test_viewer import TIMEOUT_MS, _shots, js, wait_version
from .test_viewer_bugs import CT, open_job, upload


def _rows(page: Any) -> list[int]:
    return [int(x) for x in js(page, "Array.from(document.querySelectorAll('#objects li'))"
                                     ".map((li) => li.dataset.objectId)")]


def _measure(page: Any, label_value: int) -> str:
    sel = f"#objects .measure[data-label-value='{label_value}']"
    page.wait_for_selector(sel, timeout=TIMEOUT_MS)
    return str(page.locator(sel).inner_text())


def _server_line(server: LiveServer, job: str, label_value: int) -> tuple[int, int]:
    rows = httpx.get(f"{server.url}/api/v1/jobs/{job}/measurements", timeout=30).json()
    m = {r["label_value"]: r for r in rows}[label_value]
    return int(m["voxels"]), int(m["slices"])


def _wait_line(page: Any, label_value: int, voxels: int) -> str:
    page.wait_for_function(
        f"() => {{ const e = document.querySelector(\"#objects .measure[data-label-value='{label_value}']\");"
        f" return e !== null && e.textContent.includes(' {voxels} vox'); }}", timeout=TIMEOUT_MS)
    return _measure(page, label_value)


def _wait_task(server: LiveServer, job: str, task: dict[str, Any]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        t = httpx.get(f"{server.url}/api/v1/jobs/{job}/tasks/{task['task_id']}", timeout=30).json()
        if t["state"] not in ("queued", "running"):
            assert t["state"] == "succeeded", t
            return
        time.sleep(0.1)
    raise AssertionError(f"task {task['task_id']} still running after 60 s")


def test_objects_and_measurements_follow_tasks_from_elsewhere(server: LiveServer, page: Any,
                                                              tmp_path: Path) -> None:
    job = upload(server, CT)
    open_job(page, server, job)
    page.wait_for_selector("#objects .measure", timeout=TIMEOUT_MS)
    assert _rows(page) == [1]
    url = f"{server.url}/api/v1/jobs/{job}"
    # another client segments a new object 2 on slice 15, then propagates it
    t = httpx.post(f"{url}/initial-mask", json={"object_id": 2, "slice_index": 15,
                                                "box": [40, 40, 80, 70]}, timeout=30).json()
    _wait_task(server, job, t)
    wait_version(page, 1)
    page.wait_for_selector("#objects li[data-object-id='2']", timeout=TIMEOUT_MS)
    vox, sl = _server_line(server, job, 2)
    assert vox > 0 and sl == 1
    assert " 1 sl" in _wait_line(page, 2, vox)
    t = httpx.post(f"{url}/propagate", json={"object_id": 2}, timeout=30).json()
    _wait_task(server, job, t)
    wait_version(page, 2)
    vox2, sl2 = _server_line(server, job, 2)
    assert sl2 > 1
    line = _wait_line(page, 2, vox2)
    assert re.search(rf"\b{sl2} sl\b", line), line
    # and a mask stored from elsewhere with a third label value (a version event, not a task)
    res = httpx.get(f"{url}/result?format=nii.gz&grid=canonical", timeout=30)
    img: Any = nib.Nifti1Image.from_bytes(gzip.decompress(res.content))
    labels = np.asarray(img.dataobj).astype(np.uint8)
    labels[10:20, 10:20, 3:6] = 3
    new = nib.Nifti1Image(labels, img.affine)
    r = httpx.put(f"{url}/mask", content=gzip.compress(new.to_bytes()), timeout=30)
    assert r.status_code == 200, r.text
    wait_version(page, 3)
    page.wait_for_selector("#objects li[data-object-id='3']", timeout=TIMEOUT_MS)
    assert _rows(page) == [1, 2, 3]
    assert " 300 vox" in _wait_line(page, 3, 300)
    page.screenshot(path=str(_shots(tmp_path) / "objects_follow_tasks.png"))
    assert page.errors == []
