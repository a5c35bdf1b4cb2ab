"""Issue 9 item 10 against a real `segloop serve`: crash leftovers (``tmp/upload-*``,
``tmp/job-*``, ``jobs/<id>/versions/.tmp-*``) are swept at start-up and by cleanup once past
their grace period (recent ones, possibly in use, stay); cleanup prunes the audit log past its
retention and VACUUMs the SQLite file."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from liveserver import wait_for_health

CLI = "import sys; from segloop.cli import main; sys.exit(main(sys.argv[1:]))"
OLD = time.time() - 3 * 3600  # older than the one-hour default grace period


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _plant(home: Path, age: float) -> list[Path]:
    """Leftovers as a killed upload, job build and version write leave them."""
    job_dir = home / "jobs" / str(uuid.uuid4()) / "versions"
    job_dir.mkdir(parents=True)
    tag = uuid.uuid4().hex[:8]
    paths = [home / "tmp" / f"upload-{tag}", home / "tmp" / f"job-{tag}",
             job_dir / f".tmp-{tag}"]
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    paths[0].write_bytes(b"x" * 1000)
    (paths[1] / "source").mkdir(parents=True)
    (paths[1] / "source" / "upload.nii").write_bytes(b"y" * 1000)
    paths[2].write_bytes(b"z" * 100)
    for p in paths:
        for q in [*p.rglob("*"), p] if p.is_dir() else [p]:
            os.utime(q, (age, age))
    return paths


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[str, Path, list[Path], list[Path]]]:
    home = tmp_path / "home"
    old, recent = _plant(home, OLD), _plant(home, time.time())
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGLOOP_")}
    env.update(SEGLOOP_HOME=str(home), SEGLOOP_JSON_LOGS="false", SEGLOOP_WORKERS="1",
               SEGLOOP_DEFAULT_ENGINE="classic", SEGLOOP_AUDIT_RETENTION_DAYS="30")
    proc = subprocess.Popen([sys.executable, "-c", CLI, "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(base, seconds=20)
        yield base, home, old, recent
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_startup_and_cleanup_sweep_vacuum_prune(
        serve: tuple[str, Path, list[Path], list[Path]]) -> None:
    base, home, old, recent = serve
    assert not any(p.exists() for p in old), "start-up left old crash leftovers"
    assert all(p.exists() for p in recent), "start-up removed leftovers still in their grace"

    # more leftovers appear while it runs; and an audit log with years of entries
    later = _plant(home, OLD)
    db = sqlite3.connect(home / "segloop.db", timeout=30)
    ancient = "2020-01-01 00:00:00.000000"
    blob = json.dumps({"pad": "p" * 2000})
    db.executemany("INSERT INTO segloop_audit (ts, user, action, job_id, detail) "
                   "VALUES (?, 'old', 'upload', NULL, ?)", [(ancient, blob)] * 3000)
    db.commit()
    size_before = (home / "segloop.db").stat().st_size + \
        (home / "segloop.db-wal").stat().st_size

    r = httpx.post(f"{base}/api/v1/system/cleanup", json={}, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    assert not any(p.exists() for p in later)
    assert sorted(out["leftovers_removed"]) == sorted(
        p.relative_to(home).as_posix() for p in later)
    assert all(p.exists() for p in recent)
    assert out["audit_entries_pruned"] == 3000 and out["vacuumed"] is True
    assert db.execute("SELECT count(*) FROM segloop_audit WHERE user = 'old'").fetchone() == (0,)
    assert db.execute("PRAGMA freelist_count").fetchone() == (0,)
    db.close()
    wal = home / "segloop.db-wal"
    size_after = (home / "segloop.db").stat().st_size + (wal.stat().st_size if wal.exists()
                                                         else 0)
    assert size_after < size_before / 4, (size_before, size_after)
