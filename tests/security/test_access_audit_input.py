"""Issue 9 items 9 and 10 against a real `segloop serve` with API keys required: `/metrics` needs
a key (any role), host facts are reviewer-only, Flower is not published without auth, downloads
and `users remove` are audited, `object_id: 0` and string integers are refused with 422, and the
users command takes its options after the action too."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest

from liveserver import wait_for_health

ROOT = Path(__file__).resolve().parents[2]
CLI = "import sys; from segloop.cli import main; sys.exit(main(sys.argv[1:]))"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGLOOP_")}
    env.update({"SEGLOOP_DEFAULT_ENGINE": "classic", "SEGLOOP_JSON_LOGS": "false",
                "SEGLOOP_REQUIRE_API_KEYS": "true", "SEGLOOP_WORKERS": "1"})
    return env


def _segloop(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CLI, *args], env=env, capture_output=True,
                          text=True, encoding="utf-8", timeout=60)


def _add_user(home: Path, name: str, role: str) -> str:
    r = _segloop("users", "--home", str(home), "add", name, "--role", role, env=_env(home))
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1]


@dataclass
class Server:
    base: str
    home: Path
    annotator: str
    reviewer: str

    def client(self, key: str | None) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=30,
                            headers={"X-API-Key": key} if key else {})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("sec") / "home"
    annotator = _add_user(home, "anna", "annotator")
    reviewer = _add_user(home, "rita", "reviewer")
    port = _free_port()
    env = {**_env(home), "SEGLOOP_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-c", CLI, "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(base, seconds=20)
        yield Server(base, home, annotator, reviewer)
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


@pytest.fixture(scope="module")
def job(server: Server) -> str:
    vol = np.zeros((32, 32, 8), np.int16)
    vol[8:24, 8:24, 2:6] = 300
    img = nib.Nifti1Image(vol, np.eye(4))
    with server.client(server.annotator) as c:
        r = c.post("/api/v1/jobs", files={"file": ("v.nii", img.to_bytes())})
        assert r.status_code == 201, r.text
        return str(r.json()["job_id"])


def _audit(server: Server) -> list[dict[str, object]]:
    with server.client(server.reviewer) as c:
        r = c.get("/api/v1/system/audit", params={"limit": 500})
        assert r.status_code == 200, r.text
        return list(r.json())


def test_metrics_needs_a_key(server: Server) -> None:
    assert httpx.get(f"{server.base}/metrics").status_code == 401
    r = httpx.get(f"{server.base}/metrics",
                  headers={"Authorization": f"Bearer {server.annotator}"})
    assert r.status_code == 200 and "segloop_http_requests_total" in r.text


def test_host_facts_are_reviewer_only(server: Server) -> None:
    with server.client(server.annotator) as c:
        st = c.get("/api/v1/system/status")
        assert st.status_code == 200
        assert "host" not in st.json() and "gpus" not in st.json()
        assert "tasks" in st.json()
        assert c.get("/api/v1/system/gpu").status_code == 403
    with server.client(server.reviewer) as c:
        st = c.get("/api/v1/system/status").json()
        assert st["host"]["memory_total_bytes"] > 0 and "gpus" in st
        assert c.get("/api/v1/system/gpu").status_code == 200


@pytest.mark.parametrize("body", [
    {"slice_index": 4, "box": [8, 8, 24, 24], "object_id": 0},
    {"slice_index": 4, "box": [8, 8, 24, 24], "object_id": -3},
    {"slice_index": "4", "box": [8, 8, 24, 24]},
    {"slice_index": 4, "box": ["8", 8, 24, 24]},
    {"slice_index": 4, "box": [8, 8, 24, 24], "object_id": "1"},
    {"slice_index": True, "box": [8, 8, 24, 24]},
])
def test_loose_prompt_fields_are_refused(server: Server, job: str, body: dict[str, object]
                                         ) -> None:
    with server.client(server.annotator) as c:
        r = c.post(f"/api/v1/jobs/{job}/initial-mask", json=body)
        assert r.status_code == 422, r.text


def test_downloads_are_audited(server: Server, job: str) -> None:
    with server.client(server.annotator) as c:
        assert c.get(f"/api/v1/jobs/{job}/result").status_code == 200
        assert c.get(f"/api/v1/jobs/{job}/volume").status_code == 200
    actions = [(a["user"], a["action"], a["job_id"]) for a in _audit(server)]
    assert ("anna", "download-result", job) in actions
    assert ("anna", "download-volume", job) in actions


def test_users_options_after_the_action(tmp_path: Path) -> None:
    home = tmp_path / "home"
    r = _segloop("users", "add", "late", "--role", "reviewer", "--home", str(home),
                 env=_env(home))
    assert r.returncode == 0, r.stderr
    r = _segloop("users", "list", "--home", str(home), env=_env(home))
    assert r.returncode == 0 and "late\treviewer" in r.stdout, r.stdout + r.stderr


def test_users_remove_is_audited(server: Server) -> None:
    _add_user(server.home, "temp", "annotator")
    r = _segloop("users", "remove", "temp", "--home", str(server.home), env=_env(server.home))
    assert r.returncode == 0, r.stderr
    assert ("temp", "user-removed") in [(a["user"], a["action"]) for a in _audit(server)]


def test_flower_is_not_published_without_auth() -> None:
    cmds = [c for c in (["docker", "compose"], ["docker-compose"]) if shutil.which(c[0])]
    for cmd in cmds:
        if subprocess.run([*cmd, "version"], capture_output=True).returncode != 0:
            continue
        r = subprocess.run([*cmd, "-f", str(ROOT / "docker-compose.yml"), "config"],
                           capture_output=True, text=True, encoding="utf-8", cwd=ROOT, timeout=60)
        assert r.returncode == 0, r.stderr
        flower = r.stdout.split("flower:", 1)[1].split("\n  postgres:", 1)[0]
        ports = re.findall(r"(?:published|target|host_ip|- )\S*5555\S*|host_ip: \S+", flower)
        assert ports, flower
        assert "127.0.0.1" in flower and not re.search(r"- (0\.0\.0\.0:)?5555:5555", flower)
        return
    pytest.skip("neither `docker compose` nor `docker-compose` is installed")
