"""Each object has its own opacity slider (real Chromium, a real CT with two objects): moving
one object's slider fades that object on screen and leaves the other as it was."""

from __future__ import annotations

import gzip
import io
from typing import Any

import httpx
import nibabel as nib
import numpy as np
from PIL import Image

from .conftest import LiveServer, need_data
from .test_tools import OPEN_MS, js, wait_version


def _pixel(page: Any, p: list[float]) -> np.ndarray:
    png = page.screenshot(clip={"x": p[0] - 1, "y": p[1] - 1, "width": 3, "height": 3})
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.float64).mean(axis=(0, 1))


def test_one_objects_opacity_leaves_the_other(server: LiveServer, page: Any) -> None:
    data = need_data()
    src = data / "totalseg" / "example_ct_sm.nii.gz"
    url = server.url
    job = httpx.post(f"{url}/api/v1/jobs", files={"file": (src.name, src.read_bytes())},
                     timeout=60).json()["job_id"]
    httpx.post(f"{url}/api/v1/jobs/{job}/objects", json={}, timeout=30).raise_for_status()
    httpx.post(f"{url}/api/v1/jobs/{job}/objects", json={}, timeout=30).raise_for_status()
    ref = nib.load(str(src))
    lab = np.zeros(ref.shape, np.uint8)
    lab[20:50, 30:60, :] = 1
    lab[70:100, 30:60, :] = 2
    body = gzip.compress(nib.Nifti1Image(lab, ref.affine).to_bytes())
    httpx.put(f"{url}/api/v1/jobs/{job}/mask", content=body, timeout=60).raise_for_status()
    page.goto(f"{url}/#job={job}")
    wait_version(page, 1, OPEN_MS)
    js(page, "window.segloop.setSlice(15)")
    p1 = js(page, "window.segloop.voxelToClient(35, 45)")
    p2 = js(page, "window.segloop.voxelToClient(85, 45)")
    page.mouse.move(5, 5)  # no brush cursor or hover over the samples
    before1, before2 = _pixel(page, p1), _pixel(page, p2)
    page.keyboard.press("o")  # the overlay off: what the image alone looks like there
    bare1, bare2 = _pixel(page, p1), _pixel(page, p2)
    page.keyboard.press("o")
    assert np.abs(before1 - bare1).max() > 30 and np.abs(before2 - bare2).max() > 30

    # object 1's slider to 0 with the mouse (its left end): object 1 gone, object 2 as before
    slider = page.locator("#objects li[data-object-id='1'] .obj-opacity")
    box = slider.bounding_box()
    page.mouse.click(box["x"] + 1, box["y"] + box["height"] / 2)
    page.wait_for_function("() => window.segloop.nv.drawLut.lut[1 * 4 + 3] < 10")
    assert js(page, "window.segloop.nv.drawLut.lut[2 * 4 + 3]") == 255
    page.mouse.move(5, 5)
    page.wait_for_timeout(200)
    after1, after2 = _pixel(page, p1), _pixel(page, p2)
    assert np.abs(after1 - bare1).max() < 12, (after1, bare1)
    assert np.abs(after2 - before2).max() < 12, (after2, before2)
    # the slider keeps its value when the list is redrawn (another object made current)
    page.keyboard.press("q")
    assert page.locator("#objects li[data-object-id='1'] .obj-opacity").input_value() in ("0", "1")
    assert page.errors == []
