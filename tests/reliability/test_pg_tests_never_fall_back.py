"""Issue 9 item 14: with SEGLOOP_TEST_PG_URL set, the PostgreSQL tests run on PostgreSQL or
fail; they never fall back to SQLite (a real pytest run against a port nothing listens on)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = '''
import os
def test_database_url(database_url):
    print("DATABASE_URL", database_url)
    if os.environ.get("SEGLOOP_TEST_PG_URL"):
        assert database_url.startswith("postgresql"), database_url
'''


def _pytest(tmp_path: Path, pg_url: str | None) -> subprocess.CompletedProcess[str]:
    """Run a probe test that uses tests/worker/conftest.py's ``database_url`` fixture."""
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "SEGLOOP_TEST_PG_URL"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "worker"), str(ROOT / "src"),
                                         env.get("PYTHONPATH", "")])
    if pg_url is not None:
        env["SEGLOOP_TEST_PG_URL"] = pg_url
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                           "-p", "conftest", "--rootdir", str(tmp_path), str(probe)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, encoding="utf-8",
                          timeout=120)


def test_unreachable_postgres_fails(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    r = _pytest(tmp_path, f"postgresql://postgres@127.0.0.1:{port}/test")
    assert r.returncode != 0, r.stdout
    assert "PostgreSQL is unreachable" in r.stdout, r.stdout
    assert "DATABASE_URL sqlite" not in r.stdout


def test_configured_postgres_is_used(tmp_path: Path) -> None:
    url = os.environ.get("SEGLOOP_TEST_PG_URL")
    if not url:
        pytest.skip("SEGLOOP_TEST_PG_URL is not set (scripts/test.sh sets it)")
    r = _pytest(tmp_path, url)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "DATABASE_URL postgresql" in r.stdout
