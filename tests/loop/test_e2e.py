"""The whole loop in one process: review a corrected mask in the server, train from the
datastore, switch the server to the new model without a restart, and see the next job use it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from fastapi.testclient import TestClient

from segloop.api import create_app
from segloop.cli import main
from segloop.config import load_settings


def _ball(path: Path, seed: int) -> tuple[np.ndarray, tuple[int, int, int, int], int]:
    rng = np.random.default_rng(seed)
    g = np.indices((48, 48, 8), dtype=np.float32)
    lab = ((g[0] - 22) ** 2 + (g[1] - 26) ** 2) / 100 + (g[2] - 4) ** 2 / 9 <= 1
    img = rng.normal(100, 10, lab.shape).astype(np.float32) + 300 * lab
    nib.save(nib.Nifti1Image(img, np.diag([1.0, 1.0, 2.5, 1.0])), str(path))
    xs, ys = np.nonzero(lab[:, :, 4])
    return lab, (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())), 4


def _run(client: TestClient, jid: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(f"/api/v1/jobs/{jid}/{kind}", json=body)
    assert r.status_code == 202, r.text
    task = r.json()["task_id"]
    events = []
    with client.stream("GET", f"/api/v1/jobs/{jid}/events", params={"task_id": task}) as s:
        for line in s.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert events and events[-1]["state"] == "succeeded", events[-1:]
    return events[-1]


def test_review_train_switch_and_use(tmp_path: Path) -> None:
    home = Path(os.environ["SEGLOOP_HOME"])  # the model cache and the server share it
    settings = load_settings(None, home=home, json_logs=False, default_engine="classic")
    with TestClient(create_app(settings)) as client:
        # 1. an annotator segments, corrects and a reviewer marks the mask final
        lab, box, z = _ball(tmp_path / "a.nii.gz", 1)
        jid = client.post("/api/v1/jobs", files={"file": ("a.nii.gz", (tmp_path / "a.nii.gz").read_bytes())}
                          ).json()["job_id"]
        _run(client, jid, "initial-mask", {"slice_index": z, "box": list(box)})
        _run(client, jid, "propagate", {})
        r = client.put(f"/api/v1/jobs/{jid}/mask", files={"file": ("m.nii.gz", nib.Nifti1Image(
            lab.astype(np.uint8), np.diag([1.0, 1.0, 2.5, 1.0])).to_bytes())})
        assert r.status_code in (200, 201), r.text
        assert client.post(f"/api/v1/jobs/{jid}/review", json={}).status_code == 200

        # 2. train from the datastore (tiny model: no weights here); the run registers itself
        rc = main(["train", "--from-datastore", "--smoke", "--out", str(tmp_path / "run"),
                   "--name", "loop1", "--samples-per-epoch", "2", "--val-samples", "1", "-q"])
        assert rc == 0
        summary = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
        assert summary["train_patients"] == [jid]

        # 3. switch the running server to the new model: no restart
        r = client.post("/api/v1/system/model/reload", json={"engine": "medsam2@loop1"})
        assert r.status_code == 200, r.text
        assert "medsam2@loop1" in client.get("/api/v1/system/engines").json()["engines"]

        # 4. the next job uses it
        _, box2, z2 = _ball(tmp_path / "b.nii.gz", 2)
        jid2 = client.post("/api/v1/jobs", files={"file": ("b.nii.gz", (tmp_path / "b.nii.gz").read_bytes())}
                           ).json()["job_id"]
        _run(client, jid2, "initial-mask", {"slice_index": z2, "box": list(box2)})
        versions = client.get(f"/api/v1/jobs/{jid2}/versions").json()
        assert versions[-1]["engine"] == "medsam2@loop1", versions[-1]
