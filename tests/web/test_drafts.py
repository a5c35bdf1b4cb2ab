"""Unsaved strokes are autosaved as a draft on the server and offered back in another browser.

Real mouse strokes in Chromium on a real CT; the page is closed without saving, and the job is
opened in a fresh browser context (no shared storage): the draft must come from the server, be
offered, restore the strokes, never count as a version, and be gone once saved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from .conftest import LiveServer
from .test_viewer import TIMEOUT_MS, _shots, js, wait_version
from .test_viewer_bugs import CT, open_job, painted, stroke, upload


def _draft(server: LiveServer, job: str) -> httpx.Response:
    return httpx.get(f"{server.url}/api/v1/jobs/{job}/draft", timeout=30)


def _versions(server: LiveServer, job: str) -> list[Any]:
    return list(httpx.get(f"{server.url}/api/v1/jobs/{job}/versions", timeout=30).json())


def test_a_draft_left_in_one_browser_is_offered_in_another(
        server: LiveServer, browser: Any, tmp_path: Path) -> None:
    job = upload(server, CT)
    ctx = browser.new_context(viewport={"width": 1180, "height": 740})
    page = ctx.new_page()
    open_job(page, server, job)
    page.keyboard.press("d")
    stroke(page, 15)
    stroke(page, 18)
    n = painted(page)
    assert n > 0
    page.wait_for_selector("body[data-draft='kept']", timeout=TIMEOUT_MS)  # after the last stroke
    d = _draft(server, job)
    assert d.status_code == 200, d.text
    assert d.json()["base_version"] == 0 and d.json()["voxels"] == n
    assert _versions(server, job) == [], "a draft must not be a version"
    ctx.close()  # the tab goes away without saving (no beforeunload answer)

    other = browser.new_context(viewport={"width": 1180, "height": 740})
    try:
        page = other.new_page()
        open_job(page, server, job)
        assert painted(page) == 0
        page.wait_for_selector("#draft-bar:not(.hidden)", timeout=TIMEOUT_MS)
        assert "on the server" in page.locator("#draft-bar").inner_text()
        page.screenshot(path=str(_shots(tmp_path) / "draft_from_another_browser.png"))
        page.click("#btn-draft-restore")
        assert painted(page) == n and js(page, "window.segloop.state.dirty") is True
        assert _versions(server, job) == []
        page.keyboard.press("Control+s")
        wait_version(page, 1)
        assert [v["source"] for v in _versions(server, job)] == ["edit"]
        page.wait_for_function(
            f"() => fetch('/api/v1/jobs/{job}/draft').then((r) => r.status === 404)",
            timeout=TIMEOUT_MS)
        # Discard: a new stroke's draft is deleted on the server
        page.keyboard.press("d")
        stroke(page, 22)
        page.wait_for_selector("body[data-draft='kept']", timeout=TIMEOUT_MS)
        assert _draft(server, job).json()["base_version"] == 1
        page.reload()
        page.wait_for_selector(f"body[data-ready='1'][data-job='{job}']", timeout=TIMEOUT_MS)
        page.wait_for_selector("#draft-bar:not(.hidden)", timeout=TIMEOUT_MS)
        page.click("#btn-draft-drop")
        page.wait_for_function(
            f"() => fetch('/api/v1/jobs/{job}/draft').then((r) => r.status === 404)",
            timeout=TIMEOUT_MS)
        assert painted(page) == n and len(_versions(server, job)) == 1
    finally:
        other.close()
