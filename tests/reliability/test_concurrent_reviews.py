"""32 reviews posted at once over HTTP leave 32 manifest rows (issue 9, item 4).

Before the datastore's lock, each review read manifest.csv, added its row and renamed the file
back: concurrent reviews overwrote each other's rows (24 reviews -> 7 rows), while every one
answered 200. Checked against one embedded `segloop serve`, and against two API processes in
Celery mode (two `segloop worker`s, a private Redis) sharing one home, so the writers are
different processes.
"""

from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from .services import Redis, Server, Worker, tiny_mask, tiny_volume

#: real servers, workers and Redis: tens of seconds (run with -m slow)
pytestmark = pytest.mark.slow

N = 32


def _jobs_with_masks(server: Server, n: int) -> list[str]:
    jobs = []
    with server.client() as c:
        for i in range(n):
            r = c.post("/api/v1/jobs", files={"file": (f"v{i}.nii.gz", tiny_volume(i))})
            assert r.status_code == 201, r.text
            jid = r.json()["job_id"]
            r = c.put(f"/api/v1/jobs/{jid}/mask", content=tiny_mask())
            assert r.status_code == 200, r.text
            jobs.append(jid)
    return jobs


def _review_all(urls: list[str], jobs: list[str]) -> list[int]:
    def review(i: int) -> int:
        with httpx.Client(base_url=urls[i % len(urls)], timeout=120.0) as c:
            return c.post(f"/api/v1/jobs/{jobs[i]}/review", json={}).status_code

    with ThreadPoolExecutor(N) as pool:
        return list(pool.map(review, range(len(jobs))))


def _manifest_rows(home: Path) -> list[dict[str, str]]:
    with (home / "datastore" / "manifest.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def _check(home: Path, jobs: list[str]) -> None:
    rows = _manifest_rows(home)
    assert len(rows) == N, f"{len(rows)} manifest rows for {N} reviews"
    assert sorted(r["job_id"] for r in rows) == sorted(jobs)
    cases = sorted(p.name for p in (home / "datastore" / "cases").iterdir())
    assert cases == sorted(f"{j}_v0001" for j in jobs)


def _base(home: Path) -> dict[str, Any]:
    return {"home": str(home), "json_logs": False, "default_engine": "classic",
            "heartbeat_seconds": 0.5, "stale_after_seconds": 5.0, "workers": 2}


def test_concurrent_reviews_embedded(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = Server(_base(home), tmp_path / "serve.log")
    try:
        server.wait_ready()
        jobs = _jobs_with_masks(server, N)
        assert _review_all([server.url], jobs) == [200] * N
        _check(home, jobs)
    finally:
        server.stop()


def test_concurrent_reviews_two_api_processes_celery(tmp_path: Path) -> None:
    home = tmp_path / "home"
    redis = Redis(tmp_path / "redis")
    redis.start()
    settings = {**_base(home), "queue": "celery", "redis_url": redis.url,
                "database_url": f"sqlite:///{tmp_path / 'jobs.db'}"}
    procs: list[Any] = [Worker(settings, tmp_path / f"worker{i}.log") for i in range(2)]
    try:
        servers = [Server(settings, tmp_path / f"serve{i}.log") for i in range(2)]
        procs += servers
        for s in servers:
            s.wait_ready()
        jobs = _jobs_with_masks(servers[0], N)
        assert _review_all([s.url for s in servers], jobs) == [200] * N
        _check(home, jobs)
    finally:
        for p in procs:
            p.stop()
        redis.stop()
