"""Prompts and painting on coronal and sagittal tiles, in a real headless Chromium on a real CT
(totalseg's example CT, the liver), with real mouse and keyboard events.

A box dragged on a coronal slice is segmented on that coronal slice; Propagate then runs along
y (the propagating slices are painted on coronal slices while it runs) and gives exactly what
the classic engine gives on the transposed volume. A brush stroke on a sagittal slice paints
that sagittal slice only, the remove-region tool removes a region on the sagittal slice
clicked, and the sphere brush paints a ball around the voxel clicked on the sagittal tile.
Stop here (K) on a coronal view limits the object along y.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np

from segloop.engines import get_engine
from segloop.engines.base import drive
from segloop.io import load_volume
from segloop.jobs.planesessions import view_volume
from segloop.types import Plane, Prompts

from .conftest import LiveServer, need_data
from .test_tools import OPEN_MS, TIMEOUT_MS, bitmap, js, labels, set_size, wait_version


def _upload(url: str, src: Path) -> str:
    r = httpx.post(f"{url}/api/v1/jobs", files={"file": (src.name, src.read_bytes())},
                   timeout=60)
    r.raise_for_status()
    return str(r.json()["job_id"])


def _client(page: Any, u: float, v: float, axis: int) -> list[float]:
    p = js(page, f"window.segloop.voxelToClient({u}, {v}, {axis})")
    assert p is not None, f"no tile of axis {axis} on screen"
    return list(p)


def _drag(page: Any, a: list[float], b: list[float]) -> None:
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move(*b, steps=10)
    page.mouse.up()


def test_a_box_on_a_coronal_tile_propagates_along_y(server: LiveServer, page: Any,
                                                    tmp_path: Path) -> None:
    data = need_data()
    url = server.url
    liver = np.asarray(nib.load(str(data / "totalseg/example_seg.nii.gz")).dataobj) == 5
    y = int(np.argmax(liver.sum(axis=(0, 2))))
    xs, zs = np.nonzero(liver[:, y, :])
    box = [int(xs.min()), int(zs.min()), int(xs.max()), int(zs.max())]
    job = _upload(url, data / "totalseg" / "example_ct_sm.nii.gz")
    page.goto(f"{url}/#job={job}")
    wait_version(page, 0, OPEN_MS)
    page.select_option("#engine", "classic")

    # coronal view, coronal slice y; drag a box with the box tool; S segments it
    page.keyboard.press("2")
    js(page, f"window.segloop.setSlice({y}, 1)")
    page.keyboard.press("b")
    _drag(page, _client(page, box[0], box[1], 1), _client(page, box[2], box[3], 1))
    p = js(page, "window.segloop.state.prompts")
    assert p["axis"] == 1 and p["z"] == y and p["box"] == box, p
    assert "coronal slice" in page.locator("#prompt-info").inner_text()
    page.keyboard.press("s")
    wait_version(page, 1)
    first = labels(url, job)
    assert first[:, y, :].sum() > 50, "no mask on the coronal slice"
    assert not np.delete(first, y, axis=1).any(), "the mask is not only on that coronal slice"

    # propagate (slowly, so the coronal slices painted while it runs can be looked at)
    page.select_option("#engine", "slow-classic")
    page.keyboard.press("g")
    page.wait_for_function("() => window.segloop.state.paintedSlices >= 4", timeout=TIMEOUT_MS)
    live = bitmap(page) == 1
    wait_version(page, 2, 120_000)
    full = labels(url, job) == 1
    ys = np.flatnonzero(full.any(axis=(0, 2)))
    assert len(ys) > 8, "the propagation does not span several coronal slices"
    painted = np.flatnonzero(live.any(axis=(0, 2)))
    assert len(painted) > 1 and np.array_equal(live[:, painted, :], full[:, painted, :]), \
        "the slices painted while propagating are not the coronal slices of the result"

    # the same as the engine run on the transposed volume
    vol_path = tmp_path / "canonical.nii"
    vol_path.write_bytes(httpx.get(f"{url}/api/v1/jobs/{job}/volume", timeout=60).content)
    can = load_volume(vol_path).canonical()
    sess = get_engine("classic").open(view_volume(can, Plane.CORONAL))
    sess.segment_slice(y, Prompts.make(box), 1)
    drive(sess.propagate(y, None, 1), None, None)
    assert np.array_equal(Plane.CORONAL.from_view(sess.mask(1)), full)

    # stop here (K) on a coronal slice past the anchor: nothing of the object beyond it along y
    stop = int(ys.max()) - 2
    js(page, f"window.segloop.setSlice({stop}, 1)")
    page.evaluate("document.querySelector('#edit-box').open = true")  # folded below 900 px
    page.keyboard.press("k")
    wait_version(page, 3)
    cut = labels(url, job) == 1
    assert not cut[:, stop + 1:, :].any() and np.array_equal(cut[:, :stop + 1], full[:, :stop + 1])
    assert page.locator("#range-axis").inner_text() == "y"
    assert page.input_value("#range-last") == str(stop)

    # after a reload the page learns from the server (the object's anchor_axis) which side of
    # the coronal anchor a coronal slice is on: K below it clears below
    page.reload()
    wait_version(page, 3, OPEN_MS)
    page.keyboard.press("2")
    low = int(ys.min()) + 2
    assert low < y
    js(page, f"window.segloop.setSlice({low}, 1)")
    page.evaluate("document.querySelector('#edit-box').open = true")
    page.keyboard.press("k")
    wait_version(page, 4)
    both = labels(url, job) == 1
    assert not both[:, :low, :].any() and np.array_equal(both[:, low:], cut[:, low:])
    assert page.input_value("#range-first") == str(low)

    # in the multiplanar view a box goes on whichever 2D tile it is dragged on (here sagittal)
    page.keyboard.press("5")
    page.keyboard.press("b")
    page.wait_for_timeout(300)
    _drag(page, _client(page, 30, 8, 0), _client(page, 60, 20, 0))
    p = js(page, "window.segloop.state.prompts")
    assert p["axis"] == 0 and p["box"] == [30, 8, 60, 20], p
    assert p["z"] == js(page, "window.segloop.currentVox()[0]")
    assert page.errors == []


def test_brush_and_remove_region_on_a_sagittal_tile(server: LiveServer, page: Any) -> None:
    data = need_data()
    url = server.url
    job = _upload(url, data / "totalseg" / "example_ct_sm.nii.gz")
    page.goto(f"{url}/#job={job}")
    wait_version(page, 0, OPEN_MS)
    dims = js(page, "window.segloop.state.dims")
    x = dims[0] // 2
    v = dims[2] // 2  # a sagittal slice's point is (y, z)

    page.keyboard.press("3")  # sagittal view
    js(page, f"window.segloop.setSlice({x}, 0)")
    assert js(page, "window.segloop.currentVox()[0]") == x
    set_size(page, 3)
    page.keyboard.press("d")
    _drag(page, _client(page, 20, v, 0), _client(page, 70, v, 0))
    bm = bitmap(page)
    assert (bm[x] == 1).sum() > 40, "the brush did not paint the sagittal slice"
    assert not np.delete(bm, x, axis=0).any(), "the brush painted off the sagittal slice"
    page.keyboard.press("Control+s")
    wait_version(page, 1)
    saved = labels(url, job)
    assert np.array_equal(saved, bm)

    # a second stroke on the next sagittal slice, then remove-region on slice x only
    js(page, f"window.segloop.setSlice({x + 1}, 0)")
    page.keyboard.press("d")
    _drag(page, _client(page, 20, v, 0), _client(page, 70, v, 0))
    page.keyboard.press("Control+s")
    wait_version(page, 2)
    two = labels(url, job)
    assert two[x].any() and two[x + 1].any()
    js(page, f"window.segloop.setSlice({x}, 0)")
    page.keyboard.press("x")
    page.mouse.click(*_client(page, 45, v, 0))
    wait_version(page, 3)
    after = labels(url, job)
    assert not after[x].any(), "the region on the sagittal slice clicked is still there"
    assert np.array_equal(after[x + 1], two[x + 1]), "remove-region in 2D reached another slice"

    # the sphere brush clicked on the sagittal tile: a ball centred on the voxel clicked
    set_size(page, 9)
    page.keyboard.press("Shift+B")
    page.mouse.click(*_client(page, 45, v, 0))
    ball = np.argwhere((bitmap(page) == 1) & (after == 0))
    assert len(ball) > 20, "the sphere brush painted nothing"
    assert np.abs(ball.mean(axis=0) - [x, 45, v]).max() <= 1.0, ball.mean(axis=0)
    assert len(np.unique(ball[:, 0])) > 1, "the sphere stayed on one sagittal slice"
    assert page.errors == []
