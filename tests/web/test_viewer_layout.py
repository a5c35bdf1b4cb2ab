"""The viewer on a 1280 x 800 screen (a common laptop): every control of the side panel and the
whole shortcut panel are reachable without scrolling, with real work open (several earlier jobs,
objects and versions). Screenshots go to $SEGLOOP_WEB_SHOTS (or tmp_path)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from .conftest import LiveServer
from .test_viewer import TIMEOUT_MS, _shots, js
from .test_viewer_bugs import CT, open_job, upload

#: the side panel's controls (lists scroll inside themselves and are not counted)
CONTROLS = ("Array.from(document.querySelectorAll('#sidebar button, #sidebar select, "
            "#sidebar input[type=number]')).filter((e) => !e.closest('.list') && e.offsetParent)"
            ".map((e) => { const r = e.getBoundingClientRect(); "
            "return [e.id || e.textContent.trim(), r.top, r.bottom, r.right]; })")


def _wait_idle(server: LiveServer, job: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        st = httpx.get(f"{server.url}/api/v1/jobs/{job}/status", timeout=30).json()
        if st["state"] in ("succeeded", "failed", "cancelled", "ready"):
            return
        time.sleep(0.1)
    raise AssertionError(f"job {job} still busy")


def test_side_panel_and_help_fit_a_1280x800_screen(server: LiveServer, browser: Any,
                                                   tmp_path: Path) -> None:
    jobs = [upload(server, CT) for _ in range(5)]
    job = jobs[0]
    api = f"{server.url}/api/v1/jobs/{job}"
    for _ in range(2):
        httpx.post(f"{api}/objects", json={}, timeout=30).raise_for_status()
    for z in (10, 12, 14, 16):  # four versions
        httpx.post(f"{api}/initial-mask", json={"slice_index": z, "box": [40, 40, 80, 70]},
                   timeout=30).raise_for_status()
        _wait_idle(server, job)
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    try:
        open_job(page, server, job)
        assert page.locator("#objects li").count() == 3
        assert page.locator("#versions li").count() == 4
        page.screenshot(path=str(_shots(tmp_path) / "layout_1280x800.png"))
        side = page.locator("#sidebar").bounding_box()
        controls = js(page, CONTROLS)
        assert len(controls) >= 15
        for name, top, bottom, right in controls:
            assert top >= side["y"] and bottom <= 800 and right <= side["x"] + side["width"], \
                f"{name!r} is out of reach at 1280x800 ({top:.0f}-{bottom:.0f} px)"
        assert js(page, "document.querySelector('#sidebar').scrollHeight "
                        "<= document.querySelector('#sidebar').clientHeight + 1")
        # the shortcut panel: whole, no scrolling inside, Close reachable
        page.keyboard.press("?")
        page.wait_for_selector("#help[open]", timeout=TIMEOUT_MS)
        page.screenshot(path=str(_shots(tmp_path) / "help_1280x800.png"))
        box = page.locator("#help").bounding_box()
        assert box["y"] >= 0 and box["y"] + box["height"] <= 800
        assert js(page, "document.querySelector('#help').scrollHeight "
                        "<= document.querySelector('#help').clientHeight + 1")
        text = page.locator("#help").inner_text()
        for key in ("Home / End", "Ctrl+Z / Ctrl+Y", "stroke", "right- or Ctrl-drag"):
            assert key in text, key
        page.click("#help button")
        assert page.locator("#help").is_hidden()
    finally:
        ctx.close()
