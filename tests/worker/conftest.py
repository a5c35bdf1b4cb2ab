"""Real services for the Celery tests: a private redis-server, a PostgreSQL schema (on
SEGLOOP_TEST_PG_URL; SQLite when unset) and `segloop worker` processes started through the CLI
module."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
#: the PostgreSQL server of the tests (CI: scripts/test.sh sets it); unset = SQLite
PG_URL = os.environ.get("SEGLOOP_TEST_PG_URL", "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    d = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(d)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            if client.ping():
                break
        except redis.ConnectionError:
            time.sleep(0.05)
    client.close()
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh PostgreSQL schema on SEGLOOP_TEST_PG_URL; a SQLite file when it is unset. Set
    and unreachable is a failure, never a silent fallback to SQLite."""
    if not PG_URL:
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'jobs.db'}"
        return
    import sqlalchemy as sa

    eng = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg2://"))
    schema = f"segloop_test_{uuid.uuid4().hex[:10]}"
    try:
        with eng.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    except Exception as exc:
        pytest.fail(f"SEGLOOP_TEST_PG_URL={PG_URL} is set but PostgreSQL is unreachable "
                    f"({type(exc).__name__}: {str(exc).strip().splitlines()[0]}); start it or "
                    "unset the variable to run these tests on SQLite", pytrace=False)
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    with eng.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    eng.dispose()


WORKER_CMD = (
    "import argparse, sys; from segloop.cli import worker; p = argparse.ArgumentParser(); "
    "s = p.add_subparsers(); worker.register(s); a = p.parse_args(sys.argv[1:]); "
    "sys.exit(a.func(a))"
)


class Workers:
    """Starts and kills `segloop worker` processes sharing one environment."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        p = subprocess.Popen([sys.executable, "-c", WORKER_CMD, "worker", "--concurrency", "1"],
                             env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def kill(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        for p in self.procs:
            if p.pid == pid:
                p.wait(10)

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGQUIT)  # cold shutdown: idle workers, no need to wait
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

    def logs(self) -> str:
        return "\n".join(f.read_text(errors="replace")[-3000:]
                         for f in sorted(self.log_dir.glob("worker-*.log")))


def service_env(home: Path, redis_url: str, database_url: str) -> dict[str, Any]:
    """Settings shared by the API and the workers of one test."""
    return {
        "home": str(home), "redis_url": redis_url, "database_url": database_url,
        "queue": "celery", "heartbeat_seconds": 0.3, "stale_after_seconds": 3.0,
        "default_engine": "classic", "plugins": ["slow_engine_plugin"], "json_logs": True,
    }


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data directory shared by the API and the workers of this module."""
    return tmp_path_factory.mktemp("svc") / "home"


@pytest.fixture(scope="module")
def workers(home: Path, redis_url: str, database_url: str) -> Iterator[Workers]:
    """Two running workers (started once per module)."""
    import json

    values = service_env(home, redis_url, database_url)
    env = dict(os.environ)
    for k, v in values.items():
        env[f"SEGLOOP_{k.upper()}"] = json.dumps(v) if isinstance(v, list) else str(v)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    logs = home.parent / "logs"
    logs.mkdir()
    w = Workers(env, logs)
    w.start()
    w.start()
    yield w
    w.stop_all()
