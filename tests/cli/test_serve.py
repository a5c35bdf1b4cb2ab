"""The service commands as a user runs them: `segloop users`, `segloop serve` (a real uvicorn
process), the refusal to serve a non-loopback address without keys, and `docker compose config`."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from liveserver import wait_for_health
from segloop.errors import SegloopError

ROOT = Path(__file__).resolve().parents[2]

RUN_CMD = (
    "import argparse, sys; from segloop.cli import serve, users, worker; "
    "p = argparse.ArgumentParser(); s = p.add_subparsers(); "
    "[m.register(s) for m in (serve, users, worker)]; a = p.parse_args(sys.argv[1:]); "
    "sys.exit(a.func(a))"
)


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SEGLOOP_HOME": str(home)}
    return subprocess.run([sys.executable, "-c", RUN_CMD, *args], env=env, capture_output=True,
                          text=True, encoding="utf-8", timeout=60)


def _parse(*args: str) -> argparse.Namespace:
    from segloop.cli import serve, users, worker

    p = argparse.ArgumentParser()
    s = p.add_subparsers()
    for m in (serve, users, worker):
        m.register(s)
    return p.parse_args(args)


def test_users_add_list_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    r = _cli("users", "add", "alice", "--role", "reviewer", home=home)
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip().splitlines()[-1]
    assert key.startswith("sl_") and len(key) > 40
    from segloop.config import load_settings
    from segloop.jobs.store import JobStore

    store = JobStore(load_settings(None, home=home))
    who = store.authenticate(key)
    assert who is not None and (who.name, who.role) == ("alice", "reviewer")
    assert key not in (home / "segloop.db").read_bytes().decode("latin-1")  # stored hashed
    store.close()
    from segloop.cli import users

    capsys.readouterr()
    users.run(_parse("users", "--home", str(home), "list"))
    assert "alice\treviewer" in capsys.readouterr().out
    users.run(_parse("users", "--home", str(home), "remove", "alice"))
    with pytest.raises(SegloopError, match="no user"):
        users.run(_parse("users", "--home", str(home), "remove", "alice"))


def test_serve_refuses_public_bind_without_keys(tmp_path: Path) -> None:
    from segloop.cli import serve

    args = _parse("serve", "--host", "0.0.0.0", "--home", str(tmp_path / "h"))
    with pytest.raises(SegloopError, match="without API keys"):
        serve.run(args)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_real_process(tmp_path: Path) -> None:
    """`segloop serve` with defaults answers /health and runs a task with pushed events."""
    port = _free_port()
    env = {**os.environ, "SEGLOOP_HOME": str(tmp_path / "home"),
           "SEGLOOP_DEFAULT_ENGINE": "classic"}
    proc = subprocess.Popen([sys.executable, "-c", RUN_CMD, "serve", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(base, seconds=15)
        import nibabel as nib
        import numpy as np

        vol = np.zeros((40, 40, 12), np.int16)
        vol[10:30, 12:28, 2:10] = 300
        vol += np.random.default_rng(0).normal(0, 10, vol.shape).astype(np.int16)
        img = nib.Nifti1Image(vol, np.diag([1.0, 1.0, 2.0, 1.0]))
        with httpx.Client(base_url=base, timeout=30) as c:
            r = c.post("/api/v1/jobs", files={"file": ("v.nii", img.to_bytes())})
            assert r.status_code == 201, r.text
            jid = r.json()["job_id"]
            t = c.post(f"/api/v1/jobs/{jid}/initial-mask",
                       json={"slice_index": 6, "box": [8, 10, 32, 30]}).json()
            c.post(f"/api/v1/jobs/{jid}/propagate")
            types = []
            with c.stream("GET", t["events"]) as ev:
                for line in ev.iter_lines():
                    if line.startswith("data: "):
                        types.append(json.loads(line[6:])["type"])
            assert types[0] == "status" and types[-1] == "done"
            assert "segloop_http_requests_total" in c.get("/metrics").text
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0].decode()
    assert "serving on http://127.0.0.1" in out
    logs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert any(rec.get("route") == "/api/v1/jobs" and rec.get("status") == 201 for rec in logs)


def test_docker_compose_config() -> None:
    """The compose file is valid (client-side check; no Docker engine needed)."""
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for cmd in candidates:
        probe = subprocess.run([*cmd, "version"], capture_output=True, text=True, encoding="utf-8")
        if probe.returncode != 0:
            continue
        r = subprocess.run([*cmd, "-f", str(ROOT / "docker-compose.yml"), "config"],
                           capture_output=True, text=True, encoding="utf-8", cwd=ROOT, timeout=60)
        assert r.returncode == 0, r.stderr
        for svc in ("api:", "worker:", "redis:", "flower:"):
            assert svc in r.stdout
        assert "nvidia" in r.stdout
        return
    pytest.skip("neither `docker compose` (plugin) nor `docker-compose` is installed")


NO_TORCH = r"""
import sys, numpy as np, nibabel as nib
from fastapi.testclient import TestClient
from segloop.api import create_app
from segloop.config import load_settings
s = load_settings(None, home=sys.argv[1], default_engine="classic", json_logs=False)
vol = np.zeros((30, 30, 8), np.int16); vol[8:22, 8:22, 1:7] = 200
with TestClient(create_app(s)) as c:
    img = nib.Nifti1Image(vol, np.eye(4))
    jid = c.post("/api/v1/jobs", files={"file": ("v.nii", img.to_bytes())}).json()["job_id"]
    t = c.post(f"/api/v1/jobs/{jid}/initial-mask", json={"slice_index": 4, "box": [6, 6, 24, 24]}).json()
    with c.stream("GET", t["events"]) as r:
        body = "".join(r.iter_text())
    assert "event: done" in body, body
    for p in ("/api/v1/system/status", "/api/v1/system/model", "/api/v1/system/engines", "/metrics"):
        assert c.get(p).status_code == 200, p
    c.get(f"/api/v1/jobs/{jid}/result")
print("torch" in sys.modules, "celery" in sys.modules)
"""


def test_api_process_never_imports_torch(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-c", NO_TORCH, str(tmp_path / "home")],
                       capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-2:] == ["False", "False"]
