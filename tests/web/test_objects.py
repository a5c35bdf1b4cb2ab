"""The measurement line under each object follows unsaved brush/eraser strokes (issue 15).

Real strokes in Chromium on a real CT: the line is computed in the browser from the painted
bitmap and marked "unsaved"; once saved, the server's measurements of the new version read the
same numbers; an eraser stroke lowers it again before any save.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from .conftest import LiveServer
from .test_viewer import TIMEOUT_MS, _shots, wait_version
from .test_viewer_bugs import CT, open_job, painted, stroke, upload


def _line(page: Any) -> str:
    return str(page.locator("#objects .measure").first.inner_text())


def _voxels(line: str) -> int:
    m = re.search(r"(\d+) vox", line)
    assert m, line
    return int(m.group(1))


def test_measurements_follow_unsaved_strokes(server: LiveServer, page: Any,
                                             tmp_path: Path) -> None:
    job = upload(server, CT)
    open_job(page, server, job)
    page.wait_for_function("() => document.querySelector('#objects .measure') !== null",
                           timeout=TIMEOUT_MS)
    assert _line(page).startswith("empty")
    page.keyboard.press("d")
    stroke(page, 15)
    page.wait_for_selector("#objects .measure.unsaved", timeout=TIMEOUT_MS)
    page.wait_for_function("() => /vox/.test(document.querySelector('#objects .measure').textContent)",
                           timeout=TIMEOUT_MS)
    first = _line(page)
    assert first.endswith("unsaved") and _voxels(first) == painted(page), first
    stroke(page, 18)
    page.wait_for_function(
        f"() => !document.querySelector('#objects .measure').textContent.includes('{_voxels(first)} vox')",
        timeout=TIMEOUT_MS)
    two = _line(page)
    assert _voxels(two) == painted(page) > _voxels(first)
    assert two.endswith(" · 1 sl · unsaved"), two  # both strokes on one axial slice
    page.screenshot(path=str(_shots(tmp_path) / "measure_unsaved.png"))
    page.keyboard.press("Control+s")
    wait_version(page, 1)
    page.wait_for_selector("#objects .measure:not(.unsaved)", timeout=TIMEOUT_MS)
    ms = httpx.get(f"{server.url}/api/v1/jobs/{job}/measurements", timeout=30).json()
    by = {m["label_value"]: m for m in ms}
    assert by[1]["voxels"] == _voxels(two)
    assert _line(page) == two.removesuffix(" · unsaved")  # the browser's numbers are the server's
    page.keyboard.press("e")  # eraser: the line drops before any save
    stroke(page, 15)
    page.wait_for_selector("#objects .measure.unsaved", timeout=TIMEOUT_MS)
    page.wait_for_function(
        f"() => !document.querySelector('#objects .measure').textContent.includes('{_voxels(two)} vox')",
        timeout=TIMEOUT_MS)
    assert _voxels(_line(page)) == painted(page) < _voxels(two)
