"""The engine session cache is bounded in estimated bytes, least recently used first (issue 9
item 3: 32 cached sessions of a 512x512x300 CT were ~12 GB)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from security.live import Server, nifti_bytes
from segloop.engines import get_engine
from segloop.io.volume import Volume
from segloop.jobs.runner import SessionCache
from segloop.jobs.sizing import estimate_bytes

SHAPE = (64, 64, 32)


def _volume(seed: int) -> np.ndarray:
    vol = np.random.default_rng(seed).normal(0, 10, SHAPE).astype(np.int16)
    vol[20:44, 18:46, 8:24] += 300
    return vol


def _session(seed: int) -> object:
    vol = Volume(data=_volume(seed), affine=np.eye(4), source_format="npy", modality="CT")
    return get_engine("classic").open(vol)


def test_estimate_sees_the_volume() -> None:
    sess = _session(0)
    n = estimate_bytes(sess)
    voxels = int(np.prod(SHAPE))
    assert voxels * 4 <= n <= voxels * 64, n  # the float32 image at least, not wildly more
    a = np.zeros(1000, np.float64)
    assert estimate_bytes({"x": a, "view": a[10:], "again": [a]}) == 8000  # views counted once


def test_cache_evicts_least_recently_used_by_bytes() -> None:
    sessions = [_session(i) for i in range(4)]
    one = estimate_bytes(sessions[0])
    cache = SessionCache(size=32, max_bytes=int(one * 2.5))
    cache.put("a", "classic", 1, "0", sessions[0])  # type: ignore[arg-type]
    cache.put("b", "classic", 1, "0", sessions[1])  # type: ignore[arg-type]
    assert cache.get("a", "classic", 1, "0") is sessions[0]  # a is now the most recent
    cache.put("c", "classic", 1, "0", sessions[2])  # type: ignore[arg-type]
    assert len(cache) == 2 and cache.nbytes <= one * 2.5
    assert cache.get("b", "classic", 1, "0") is None  # b was least recently used
    assert cache.get("a", "classic", 1, "0") is sessions[0]
    tiny = SessionCache(size=32, max_bytes=10)
    tiny.put("a", "classic", 1, "0", sessions[3])  # type: ignore[arg-type]
    assert len(tiny) == 1  # the newest session is always kept


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    one = estimate_bytes(_session(0))
    home = tmp_path_factory.mktemp("cache") / "home"
    with Server(home, {"SEGLOOP_SESSION_CACHE_BYTES": str(int(one * 1.5))}) as s:
        yield s


def test_server_keeps_sessions_within_bytes(server: Server) -> None:
    c = server.client
    for seed in range(3):
        jid = server.upload(nifti_bytes(_volume(seed)), "v.nii").json()["job_id"]
        r = c.post(f"/api/v1/jobs/{jid}/initial-mask",
                   json={"slice_index": 16, "box": [20, 18, 43, 45]})
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 60
        while c.get(f"/api/v1/jobs/{jid}/tasks/{r.json()['task_id']}").json()["state"] not in (
                "succeeded", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    status = c.get("/api/v1/system/status").json()
    assert status["cached_sessions"] == 1, status
