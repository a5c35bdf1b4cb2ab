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


def _scale(page: Any) -> float:
    """CSS pixels per image pixel on screen."""
    a, b = _at(page, 100, 100), _at(page, 200, 100)
    return (b[0] - a[0]) / 100


def _image_point(page: Any, client: list[int]) -> list[float]:
    """The (fractional) image coordinates at a client point, from the view's own transform."""
    out: list[float] = js(page, f"""(() => {{
        const v = window.segloop.view2d, r = v.canvas.getBoundingClientRect(), f = v.fit();
        return [(({client[0]} - r.left) * f.dpr - f.ox) / f.s,
                (({client[1]} - r.top) * f.dpr - f.oy) / f.s]; }})()""")
    return out


def test_zoom_and_pan_keep_prompts_and_brush_on_their_pixels(
        server: LiveServer, page: Any) -> None:
    src = need_data() / "sam6d/rgb.png"
    page.goto(server.url)
    page.wait_for_selector("body[data-ready='1']", timeout=TIMEOUT_MS)
    page.set_input_files("#file-input", str(src))
    page.wait_for_selector("body[data-job]", timeout=4 * TIMEOUT_MS)
    page.wait_for_selector("body.mode-2d", timeout=TIMEOUT_MS)
    s0 = _scale(page)

    # the wheel zooms around the cursor: the image point under it stays under it
    cursor = [round(v) for v in _at(page, 400, 260)]
    page.mouse.move(*cursor)
    under = _image_point(page, cursor)
    page.mouse.wheel(0, -400)
    page.wait_for_function("window.segloop.view2d.zoom > 1.5")
    assert _scale(page) > 1.5 * s0
    still = _image_point(page, cursor)
    assert abs(still[0] - under[0]) < 0.05 and abs(still[1] - under[1]) < 0.05, (under, still)
    assert abs(under[0] - 400.5) < 1 and abs(under[1] - 260.5) < 1

    # a box dragged on the zoomed picture is the image pixels under the mouse
    page.keyboard.press("b")
    drag(page, _at(page, 380, 240), _at(page, 420, 290), steps=5)
    page.mouse.up()
    assert js(page, "window.segloop.state.prompts.box") == [380, 240, 420, 290]

    # middle-button drag pans (any tool); so does Shift-drag outside the Points tool
    before = _at(page, 400, 260)
    page.mouse.move(before[0], before[1])
    page.mouse.down(button="middle")
    page.mouse.move(before[0] - 60, before[1] + 25, steps=4)
    page.mouse.up(button="middle")
    moved = _at(page, 400, 260)
    assert abs(moved[0] - (before[0] - 60)) < 1 and abs(moved[1] - (before[1] + 25)) < 1
    page.keyboard.down("Shift")
    drag(page, moved, [moved[0] + 30, moved[1] - 10], steps=3)
    page.mouse.up()
    page.keyboard.up("Shift")
    again = _at(page, 400, 260)
    assert abs(again[0] - (moved[0] + 30)) < 1 and abs(again[1] - (moved[1] - 10)) < 1
    assert js(page, "window.segloop.state.prompts.box") == [380, 240, 420, 290]  # not a new box

    # points and the brush land on their pixels while zoomed and panned
    page.keyboard.press("p")
    page.mouse.click(*_at(page, 395, 255))
    page.mouse.click(*_at(page, 402, 270), button="right")
    assert js(page, "window.segloop.state.prompts.points") == [
        {"x": 395, "y": 255, "label": 1}, {"x": 402, "y": 270, "label": 0}]
    page.click("button[data-tool='brush']")
    page.fill("#pen-size", "1")
    page.mouse.click(*_at(page, 410, 250))
    painted = js(page, "Array.from(window.segloop.view2d.ctx.nv().drawBitmap)"
                       ".map((v, i) => v ? i : -1).filter((i) => i >= 0)")
    assert painted == [250 * 640 + 410]

    # 0 and the 1:1 button reset to the whole picture
    page.locator("#pen-size").blur()
    page.keyboard.press("0")
    assert abs(_scale(page) - s0) < 1e-6 and js(page, "window.segloop.view2d.zoom") == 1
    page.keyboard.press("+")
    assert _scale(page) > 1.1 * s0
    page.click("#btn-zoom-reset")
    assert abs(_scale(page) - s0) < 1e-6 and js(page, "window.segloop.view2d.pan") == [0, 0]
    assert not page.errors, page.errors
