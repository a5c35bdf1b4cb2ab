"""Fixtures for the API tests: settings in tmp_path, a TestClient, real volumes from shared data."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from realdata import SHARED_DATA, need_shared_data
from segloop.api import create_app
from segloop.config import Settings, load_settings

DATA = SHARED_DATA


def need_data() -> Path:
    """The shared data folder, or skip."""
    return need_shared_data()


@pytest.fixture
def data() -> Path:
    return need_data()


def make_settings(tmp_path: Path, **kw: Any) -> Settings:
    base: dict[str, Any] = {"home": tmp_path / "home", "json_logs": False,
                            "heartbeat_seconds": 0.5, "stale_after_seconds": 5.0,
                            "default_engine": "classic"}
    base.update(kw)
    return load_settings(None, **base)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def upload(client: TestClient, path: Path, name: str | None = None,
           headers: dict[str, str] | None = None) -> Any:
    """POST a file as multipart; returns the response."""
    return client.post("/api/v1/jobs", files={"file": (name or path.name, path.read_bytes())},
                       headers=headers or {})


def zip_folder(folder: Path, dest: Path) -> Path:
    """Zip every file of ``folder`` (a DICOM series) into ``dest``."""
    with zipfile.ZipFile(dest, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder).as_posix())
    return dest


def follow(client: TestClient, job_id: str, task_id: str,
           headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Read the job's SSE stream until the task ends; returns the events."""
    events: list[dict[str, Any]] = []
    with client.stream("GET", f"/api/v1/jobs/{job_id}/events", params={"task_id": task_id},
                       headers=headers or {}) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events


def liver_box(data: Path) -> tuple[int, tuple[int, int, int, int], np.ndarray]:
    """Slice, box and 3D truth of the liver in totalseg's example CT (canonical = stored)."""
    lab = np.asarray(nib.load(str(data / "totalseg/example_seg.nii.gz")).dataobj) == 5
    z = int(np.argmax(lab.sum(axis=(0, 1))))
    xs, ys = np.nonzero(lab[:, :, z])
    return z, (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())), lab


def nifti_bytes(arr: np.ndarray, affine: np.ndarray) -> bytes:
    """A .nii.gz file in memory."""
    img = nib.Nifti1Image(arr, affine)
    return io.BytesIO(img.to_bytes()).getvalue()
