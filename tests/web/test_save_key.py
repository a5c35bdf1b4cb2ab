"""Ctrl+S with no unsaved strokes stores nothing (issue 15 walkthrough).

The Save button is greyed out without unsaved brush/eraser strokes, but Ctrl+S saved the
drawing anyway: every press added a version identical to the one shown (the annotator's
walkthrough, benchmarks/walkthrough.py, ended with a spurious "v4 · edit"). Now it says there is
nothing to save; with a stroke painted it saves as before.
"""

from __future__ import annotations

from typing import Any

import httpx

from .conftest import LiveServer
from .test_viewer import TIMEOUT_MS, wait_version
from .test_viewer_bugs import CT, open_job, stroke, upload


def test_ctrl_s_saves_only_unsaved_strokes(server: LiveServer, page: Any) -> None:
    job = upload(server, CT)
    open_job(page, server, job)
    page.keyboard.press("Control+s")
    page.wait_for_function("() => /Nothing to save/.test(document.querySelector('#message').textContent)",
                           timeout=TIMEOUT_MS)
    assert httpx.get(f"{server.url}/api/v1/jobs/{job}/versions", timeout=30).json() == []
    page.keyboard.press("d")
    stroke(page, 15)
    page.keyboard.press("Control+s")
    wait_version(page, 1)
    page.keyboard.press("Control+s")  # saved: nothing more to save
    page.wait_for_function("() => /Nothing to save/.test(document.querySelector('#message').textContent)",
                           timeout=TIMEOUT_MS)
    vs = httpx.get(f"{server.url}/api/v1/jobs/{job}/versions", timeout=30).json()
    assert [v["version"] for v in vs] == [1]
    assert page.errors == []
