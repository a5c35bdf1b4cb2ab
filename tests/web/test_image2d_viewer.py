"""The viewer's 2D mode in a real headless Chromium against a real segloop server: a colour
photograph (SAM-6D's RGB scene, shared data) opens as one picture in colour, with no slice
controls; a box dragged with the mouse lands on the image pixels it covers (x = column,
y = row), segments, shows the object's colour over the picture; points refine; the brush paints
and saves; the page exports a PNG of the picture's size."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from .conftest import LiveServer, need_data
from .test_viewer import TIMEOUT_MS, drag, js, wait_version

BOX = [372, 223, 438, 319]  # around SAM-6D's reference region (x 377-433, y 228-314)


def _canvas(page: Any, path: Path | None = None) -> np.ndarray:
    png = page.locator("#canvas2d").screenshot(path=str(path) if path else None)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def _mask(url: str, job: str) -> np.ndarray:
    r = httpx.get(f"{url}/api/v1/jobs/{job}/result", params={"format": "png", "style": "labels"})
    r.raise_for_status()
    return np.asarray(Image.open(io.BytesIO(r.content)))


def _at(page: Any, x: int, y: int) -> list[float]:
    out: list[float] = js(page, f"window.segloop.view2d.clientOf({x}, {y})")
    return out


def test_photo_opens_in_colour_and_segments_with_box_points_brush(
        server: LiveServer, page: Any, tmp_path: Path) -> None:
    src = need_data() / "sam6d/rgb.png"
    page.goto(server.url)
    page.wait_for_selector("body[data-ready='1']", timeout=TIMEOUT_MS)
    page.set_input_files("#file-input", str(src))
    # the first upload starts the server's ingest process: slow on a loaded machine
    page.wait_for_selector("body[data-job]", timeout=4 * TIMEOUT_MS)
    job = page.get_attribute("body", "data-job")
    page.wait_for_selector("body.mode-2d", timeout=TIMEOUT_MS)
    assert not page.locator("#slicebar").is_visible() and not page.locator("#views").is_visible()
    assert page.locator("#canvas2d").is_visible() and page.locator("#btn-download-png").is_enabled()

    # the picture is shown in colour and upright: the canvas pixel over image pixel (x, y)
    # has the photo's colour there
    photo = np.asarray(Image.open(src).convert("RGB")).astype(np.int16)
    shot = _canvas(page, tmp_path / "2d_open.png")
    box_el = page.locator("#canvas2d").bounding_box()
    spread = []
    for x, y in [(50, 40), (600, 60), (320, 400), (100, 450), (500, 300)]:
        cx, cy = _at(page, x, y)
        c = shot[int(cy - box_el["y"]), int(cx - box_el["x"])]
        near = photo[y - 3:y + 4, x - 3:x + 4].reshape(-1, 3)  # the canvas is scaled down
        spread.append(int(np.abs(near - c).max(axis=1).min()))
    assert max(spread) < 25, spread  # resampling only: not grey, not flipped
    assert np.abs(shot[..., 0] - shot[..., 1]).max() > 40  # colour reaches the screen

    page.keyboard.press("b")
    drag(page, _at(page, BOX[0], BOX[1]), _at(page, BOX[2], BOX[3]), steps=6)
    page.mouse.up()
    assert js(page, "window.segloop.state.prompts") == {
        "z": 0, "axis": 2, "box": BOX, "points": []}
    page.keyboard.press("s")
    wait_version(page, 1)
    mask = _mask(server.url, job)
    assert mask.shape == (480, 640) and mask[BOX[1]:BOX[3], BOX[0]:BOX[2]].sum() > 1000
    assert mask.sum() == mask[BOX[1]:BOX[3] + 1, BOX[0]:BOX[2] + 1].sum()  # inside the box
    shot = _canvas(page, tmp_path / "2d_segmented.png")
    ys, xs = np.nonzero(mask)
    cx, cy = _at(page, int(np.median(xs)), int(np.median(ys)))
    c = shot[int(cy - box_el["y"]), int(cx - box_el["x"])]
    assert c[0] - c[1] > 60 and c[0] - c[2] > 60, c  # object 1's red over the picture

    page.keyboard.press("p")  # a negative click inside the mask
    ys, xs = np.nonzero(mask)
    k = int(np.argmax(xs))
    page.mouse.click(*_at(page, int(xs[k]), int(ys[k])), button="right")
    pts = js(page, "window.segloop.state.prompts.points")
    assert pts == [{"x": int(xs[k]), "y": int(ys[k]), "label": 0}]
    page.keyboard.press("r")
    wait_version(page, 2)
    assert _mask(server.url, job)[ys[k], xs[k]] == 0

    page.keyboard.press("n")
    page.click("button[data-tool='brush']")
    page.fill("#pen-size", "5")
    drag(page, _at(page, 100, 100), _at(page, 140, 100), steps=8)
    page.mouse.up()
    page.click("#btn-save")
    wait_version(page, 3)
    edited = _mask(server.url, job)
    assert edited[100, 100:141].all() and edited[97:104, 120].sum() == 5
    assert edited[110, 120] == 0

    with page.expect_download(timeout=TIMEOUT_MS) as dl:
        page.click("#btn-download-png")
    out = tmp_path / "mask.png"
    dl.value.save_as(str(out))
    np.testing.assert_array_equal(np.asarray(Image.open(out)), edited)  # label values, 480x640
    assert not page.errors, page.errors
