"""Fixtures for the viewer tests: a real `segloop` server on a free port, a headless Chromium.

The browser is Debian's ``/usr/bin/chromium`` driven by Playwright (never ``playwright
install``); WebGL2 runs on SwiftShader. Tests skip, saying why, when Chromium, Playwright,
``node_modules`` (``npm ci``) or ``../shared/data`` are missing.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from realdata import SHARED_DATA, need_shared_data
from segloop.config import Settings, load_settings
from segloop.engines.classic import ClassicEngine
from segloop.engines.registry import register_engine
from segloop.web import find_niivue_dist

ROOT = Path(__file__).resolve().parents[2]
DATA = SHARED_DATA
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
]


def need_data() -> Path:
    """The shared data folder, or skip."""
    return need_shared_data()


def need_browser() -> None:
    """Skip unless Chromium, Playwright and NiiVue (node_modules) are installed."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing: apt-get install -y chromium chromium-driver")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright (Python) is not installed in this environment")
    if find_niivue_dist() is None:
        pytest.skip("node_modules/@niivue/niivue is missing: run `npm ci` in the checkout")


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """``create_app(settings)`` + ``mount`` served by uvicorn in a thread."""

    def __init__(self, settings: Settings, node_modules: Path | None = None) -> None:
        import uvicorn

        from segloop.api import create_app
        from segloop.web import mount

        self.settings = settings
        self.app = create_app(settings)
        mount(self.app, settings, node_modules=node_modules)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the segloop server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def make_settings(home: Path) -> Settings:
    """Settings of a throwaway server: data in ``home``, the classic engine."""
    return load_settings(None, home=home, json_logs=False, default_engine="classic",
                         heartbeat_seconds=0.5, stale_after_seconds=10.0)


class _SlowSession:
    """A classic session whose propagation takes 0.15 s per slice (so a test can cancel it)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def propagate(self, z: int, mask2d: Any = None, object_id: int = 1) -> Iterator[Any]:
        for r in self._inner.propagate(z, mask2d, object_id):
            time.sleep(0.15)
            yield r


class SlowClassicEngine(ClassicEngine):
    """``classic`` with slow propagation, registered as ``slow-classic`` for the tests."""

    name = "slow-classic"

    def open(self, volume: Any) -> Any:  # type: ignore[override]
        return _SlowSession(super().open(volume))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    need_browser()
    register_engine(SlowClassicEngine.name, SlowClassicEngine)
    with LiveServer(make_settings(tmp_path_factory.mktemp("segloop-home"))) as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1180, "height": 740}, accept_downloads=True)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors
    try:
        yield pg
    finally:
        ctx.close()
