"""The ``axis`` of prompts and edits over HTTP on a real CT: a coronal box propagates along y
(progress events name the plane), bad axes and ranges of another plane are one-line 4xx
errors, undo + replay keep the plane, and edits act on slices of the plane asked for."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from fastapi.testclient import TestClient

from .conftest import follow, liver_box, nifti_bytes, upload

CT = "totalseg/example_ct_sm.nii.gz"


def _labels(client: TestClient, jid: str) -> np.ndarray:
    r = client.get(f"/api/v1/jobs/{jid}/result", params={"format": "nii.gz", "grid": "canonical"})
    assert r.status_code == 200, r.text
    img: Any = nib.Nifti1Image.from_bytes(gzip.decompress(r.content))
    return np.asarray(img.dataobj)


def _run(client: TestClient, jid: str, kind: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    r = client.post(f"/api/v1/jobs/{jid}/{kind}", json=body)
    assert r.status_code == 202, r.text
    ev = follow(client, jid, r.json()["task_id"])
    assert ev[-1]["type"] == "done", ev[-1]
    return ev


def test_a_coronal_prompt_propagates_along_y(client: TestClient, data: Path) -> None:
    _, _, liver = liver_box(data)
    y = int(np.argmax(liver.sum(axis=(0, 2))))
    xs, zs = np.nonzero(liver[:, y, :])
    box = [int(xs.min()), int(zs.min()), int(xs.max()), int(zs.max())]
    jid = upload(client, data / CT).json()["job_id"]
    url = f"/api/v1/jobs/{jid}"

    # bad planes and ranges: one clear line each, nothing queued
    r = client.post(f"{url}/initial-mask", json={"slice_index": y, "box": box, "axis": "oblique"})
    assert r.status_code == 422 and "axial" in r.text
    ny = liver.shape[1]
    r = client.post(f"{url}/initial-mask", json={"slice_index": ny, "box": box, "axis": "coronal"})
    assert r.status_code == 422 and f"coronal slices 0..{ny - 1}" in r.text

    _run(client, jid, "initial-mask", {"slice_index": y, "box": box, "axis": "coronal"})
    first = _labels(client, jid)
    assert first[:, y, :].sum() > 50 and not np.delete(first, y, axis=1).any()
    obj = client.get(f"{url}/objects").json()[0]
    assert (obj["anchor_slice"], obj["anchor_axis"]) == (y, "coronal")

    r = client.post(f"{url}/propagate", json={"first_slice": 3, "range_axis": "axial"})
    assert r.status_code == 422 and "range is of axial slices" in r.text
    ev = _run(client, jid, "propagate", {})
    prog = [e for e in ev if e["type"] == "progress" and e.get("masks")]
    assert prog and all(e["axis"] == "coronal" for e in prog)
    full = _labels(client, jid)
    assert len(np.flatnonzero(full.any(axis=(0, 2)))) > 8  # several coronal slices

    # a range along y, given as coronal slices, stops the propagation there
    _run(client, jid, "propagate", {"first_slice": y - 2, "last_slice": y + 2,
                                    "range_axis": "coronal"})
    cut = _labels(client, jid)
    assert set(np.flatnonzero(cut.any(axis=(0, 2)))) <= set(range(y - 2, y + 3))

    # undo twice and redo: the versions replay with their plane
    assert client.post(f"{url}/undo").json()["current_version"] == 2
    assert np.array_equal(_labels(client, jid), full)
    vs = client.get(f"{url}/versions").json()
    assert len(vs) == 3
    # a refine on the coronal slice after undo rebuilds the session from the recorded steps
    small = [box[0] + 3, box[1] + 3, box[2] - 3, box[3] - 3]
    ev = _run(client, jid, "refine", {"slice_index": y, "box": small, "axis": "coronal"})
    assert ev[-1]["params"]["axis"] == "coronal"
    assert _labels(client, jid)[:, y, :].any()


def test_edits_act_on_the_plane_asked_for(client: TestClient, data: Path) -> None:
    jid = upload(client, data / CT).json()["job_id"]
    ref = nib.load(str(data / CT))
    lab = np.zeros(ref.shape, np.uint8)
    lab[10:40, 10:40, 5:25] = 1  # a block
    r = client.put(f"/api/v1/jobs/{jid}/mask", content=nifti_bytes(lab, ref.affine))
    assert r.status_code == 200, r.text
    url = f"/api/v1/jobs/{jid}/edit"

    # clear from coronal slice 30 up: y >= 30 only
    r = client.post(url, json={"op": "clear-slices", "first_slice": 30, "axis": "coronal"})
    assert r.status_code == 200, r.text
    now = _labels(client, jid)
    assert not now[:, 30:, :].any() and (now[:, :30, :] == lab[:, :30, :]).all()

    # remove-region in 2D on sagittal slice x = 20: that slice only
    r = client.post(url, json={"op": "remove-region", "point": [20, 15, 10],
                               "axis": "sagittal"})
    assert r.status_code == 200, r.text
    after = _labels(client, jid)
    assert not after[20].any() and after[19].any() and after[21].any()
    assert r.json()["changed"] == int(now[20].sum())

    # keep sagittal slices 12..35
    r = client.post(url, json={"op": "keep-slices", "first_slice": 12, "last_slice": 35,
                               "axis": "sagittal"})
    assert r.status_code == 200, r.text
    kept = _labels(client, jid)
    assert not kept[:12].any() and not kept[36:].any() and kept[12:36].any()

    r = client.post(url, json={"op": "clear-slices", "first_slice": 1, "axis": "diagonal"})
    assert r.status_code == 422
