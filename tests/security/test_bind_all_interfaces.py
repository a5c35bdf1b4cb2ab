"""Issue 9 item 2: an empty host (``--host ""``, ``SEGLOOP_HOST=""``, ``host = ""`` in the config
file) binds every interface, so `segloop serve` must treat it as public: refuse to start without
API keys, and require a key on every request when keys exist. Drives the real `segloop serve`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from liveserver import wait_for_health
from segloop.listen import bind_addresses, is_loopback

SERVE = "import sys; from segloop.cli import main; sys.exit(main(sys.argv[1:]))"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGLOOP_")}
    env.update({"SEGLOOP_HOME": str(home), "SEGLOOP_DEFAULT_ENGINE": "classic",
                "SEGLOOP_JSON_LOGS": "false"}, **extra)
    return env


def _segloop(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SERVE, *args], env=env, capture_output=True,
                          text=True, encoding="utf-8", timeout=60)


def test_empty_host_is_not_loopback() -> None:
    assert not is_loopback("")
    assert set(bind_addresses("")) & {"0.0.0.0", "::"}
    for host in ("0.0.0.0", "::", "no-such-host.invalid"):
        assert not is_loopback(host), host
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert is_loopback(host) or not bind_addresses(host), host


@pytest.mark.parametrize("how", ["flag", "env", "config"])
def test_empty_host_without_keys_refuses_to_start(tmp_path: Path, how: str) -> None:
    home = tmp_path / "home"
    args = ["serve", "--port", str(_free_port())]
    env = _env(home)
    if how == "flag":
        args += ["--host", ""]
    elif how == "env":
        env["SEGLOOP_HOST"] = ""
    else:
        cfg = tmp_path / "segloop.toml"
        cfg.write_text('host = ""\n')
        args += ["--config", str(cfg)]
    r = _segloop(*args, env=env)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "refusing to serve" in r.stderr and "without API keys" in r.stderr
    assert "0.0.0.0" in r.stderr or "::" in r.stderr  # says what it would have bound
    assert "Traceback" not in r.stderr


def test_empty_host_with_a_key_requires_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = _env(home)
    r = _segloop("users", "add", "alice", "--role", "annotator", env=env)
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip().splitlines()[-1]
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVE, "serve", "--host", "", "--port",
                             str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(base, seconds=20)
        assert httpx.get(f"{base}/api/v1/jobs", timeout=5).status_code == 401
        ok = httpx.get(f"{base}/api/v1/jobs", headers={"X-API-Key": key}, timeout=5)
        assert ok.status_code == 200, ok.text
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0].decode()
    assert "api keys required" in out
