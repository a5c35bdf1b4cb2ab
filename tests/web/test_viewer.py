"""The viewer in a real headless Chromium (WebGL2 on SwiftShader) against a real segloop server.

The whole human-in-the-loop workflow is driven with the mouse and the keyboard: upload a real CT
through the page's file input, drag a box on the axial view, segment, propagate, refine with
points, paint with the brush, undo/redo, review, download. Each step is checked against the API
(the prompt's voxel coordinates, the mask versions) and against the pixels on screen (the
overlay colour is really rendered). Screenshots go to tmp_path, or to $SEGLOOP_WEB_SHOTS.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
from PIL import Image

from segloop.jobs.runner import mask_runs

from .conftest import LiveServer, make_settings, need_browser, need_data

TIMEOUT_MS = 30_000


def _shots(tmp_path: Path) -> Path:
    d = Path(os.environ.get("SEGLOOP_WEB_SHOTS") or tmp_path / "shots")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _rgb(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def overlay_pixels(page: Any, path: Path | None = None) -> int:
    """Pixels of the viewer canvas showing object 1's colour (#ff4040 blended over grey)."""
    png = page.locator("#gl").screenshot(path=str(path) if path else None)
    a = _rgb(png)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    return int(((r - g > 60) & (r - b > 60)).sum())


def box_pixels(page: Any) -> int:
    """Pixels of the prompt layer's yellow box outline (#ffd400)."""
    a = _rgb(page.screenshot())
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    return int(((r > 200) & (g > 170) & (b < 90)).sum())


def js(page: Any, expr: str) -> Any:
    return page.evaluate(f"() => {expr}")


def drag(page: Any, a: list[float], b: list[float], steps: int = 4) -> None:
    page.mouse.move(*a)
    page.mouse.down()
    for i in range(1, steps + 1):
        t = i / steps
        page.mouse.move(a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)


def wait_version(page: Any, n: int) -> None:
    page.wait_for_selector(f"body[data-version='{n}']", timeout=TIMEOUT_MS)


def api_labels(url: str, job: str, version: int | None = None) -> np.ndarray:
    q = "" if version is None else f"&version={version}"
    r = httpx.get(f"{url}/api/v1/jobs/{job}/result?format=nii.gz&grid=canonical{q}")
    r.raise_for_status()
    img: Any = nib.Nifti1Image.from_bytes(__import__("gzip").decompress(r.content))
    return np.asarray(img.dataobj)


def test_full_workflow_with_mouse_and_keyboard(server: LiveServer, page: Any,
                                               tmp_path: Path) -> None:
    data = need_data()
    ct = data / "totalseg" / "example_ct_sm.nii.gz"
    shots = _shots(tmp_path)
    url = server.url

    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=TIMEOUT_MS)
    assert page.locator("#banner").is_hidden()

    # -- open work: upload through the file input
    page.set_input_files("#file-input", str(ct))
    page.wait_for_selector("body[data-job]", timeout=TIMEOUT_MS)
    job = page.get_attribute("body", "data-job")
    assert js(page, "window.segloop.state.dims") == [122, 101, 30]
    assert overlay_pixels(page, shots / "01_opened.png") < 20

    # -- view: slider / keys move the axial slice; crosshair readout shows voxel + intensity
    z0 = js(page, "window.segloop.currentVox()[2]")
    page.keyboard.press("ArrowUp")
    assert js(page, "window.segloop.currentVox()[2]") == z0 + 1
    page.keyboard.press("ArrowDown")
    assert page.locator("#slice-label").inner_text().startswith(f"{z0} /")
    assert "crosshair x" in page.locator("#cursor").inner_text()
    centre = js(page, "window.segloop.voxelToClient(61, 50)")
    page.mouse.move(*centre)
    page.mouse.wheel(0, -120)
    page.wait_for_timeout(150)
    assert js(page, "window.segloop.currentVox()[2]") != z0, "the wheel does not scroll slices"
    js(page, f"window.segloop.setSlice({z0})")
    # window/level by right-drag, then a CT preset; zoom with the keyboard
    cal0 = js(page, "[window.segloop.nv.back.cal_min, window.segloop.nv.back.cal_max]")
    page.mouse.down(button="right")
    page.mouse.move(centre[0] + 90, centre[1] + 50, steps=2)
    page.mouse.up(button="right")
    cal1 = js(page, "[window.segloop.nv.back.cal_min, window.segloop.nv.back.cal_max]")
    assert cal1 != cal0, "right-drag does not change window/level"
    page.select_option("#wl-preset", "400,40")
    assert page.locator("#wl-readout").inner_text() == "W 400 L 40"
    page.keyboard.press("+")
    assert js(page, "window.segloop.nv.scene.pan2Dxyzmm[3]") > 1.1
    page.keyboard.press("0")
    assert js(page, "window.segloop.currentVox()[2]") == z0
    # the slider (clicked near its right end) moves the slice and shows its number
    page.locator("#slice").click(position={"x": page.locator("#slice").bounding_box()["width"] - 8,
                                           "y": 5})
    zs = js(page, "window.segloop.currentVox()[2]")
    assert zs > z0 + 5 and page.locator("#slice-label").inner_text() == f"{zs} / 29"
    js(page, f"window.segloop.setSlice({z0})")

    # -- engine picker from the server's list
    page.select_option("#engine", "classic")

    # -- prompt: drag a box on the axial view; it is drawn while dragging
    page.keyboard.press("b")
    box = [40, 40, 80, 70]
    a = js(page, f"window.segloop.voxelToClient({box[0]}, {box[1]})")
    b = js(page, f"window.segloop.voxelToClient({box[2]}, {box[3]})")
    drag(page, a, b)
    assert box_pixels(page) > 200, "the box is not drawn while dragging"
    page.screenshot(path=str(shots / "02_box_drag.png"))
    page.mouse.up()
    assert js(page, "window.segloop.state.prompts") == {"z": z0, "axis": 2, "box": box,
                                                        "points": []}

    # -- segment: the 2D mask appears as an overlay when the pushed event arrives
    page.click("#btn-segment")
    wait_version(page, 1)
    n1 = overlay_pixels(page, shots / "03_segmented.png")
    assert n1 > 300, f"overlay not rendered after segmenting ({n1} px)"
    st = httpx.get(f"{url}/api/v1/jobs/{job}/status").json()
    assert st["task"]["kind"] == "initial-mask"
    assert st["task"]["params"]["box"] == box and st["task"]["params"]["slice_index"] == z0
    assert st["task"]["params"]["engine"] == "classic"
    lab1 = api_labels(url, job, 1)
    assert lab1[..., z0].any() and not np.delete(lab1, z0, axis=2).any()

    # -- propagate (keyboard): live progress from the event stream, mask grows slice by slice
    page.keyboard.press("g")
    wait_version(page, 2)
    assert js(page, "window.segloop.state.eventCounts.progress") >= 2
    assert js(page, "window.segloop.state.paintedSlices") >= 1
    assert "slices" in page.locator("#progress-text").inner_text()
    lab2 = api_labels(url, job, 2)
    assert (lab2.reshape(-1, lab2.shape[2]).any(axis=0)).sum() > 5
    for _ in range(4):
        page.keyboard.press("ArrowDown")
    z1 = z0 - 4
    assert js(page, "window.segloop.currentVox()[2]") == z1
    page.wait_for_timeout(100)
    n2 = overlay_pixels(page, shots / "04_propagated_other_slice.png")
    assert (n2 > 100) == bool(lab2[..., z1].any())

    # -- correct: + / − points on this slice, then refine
    page.keyboard.press("p")
    inside = js(page, "window.segloop.voxelToClient(60, 50)")
    outside = js(page, "window.segloop.voxelToClient(45, 66)")
    page.mouse.click(*inside)
    page.keyboard.down("Shift")
    page.mouse.click(*outside)
    page.keyboard.up("Shift")
    pr = js(page, "window.segloop.state.prompts")
    assert pr["z"] == z1
    assert pr["points"] == [{"x": 60, "y": 50, "label": 1}, {"x": 45, "y": 66, "label": 0}]
    page.screenshot(path=str(shots / "05_points.png"))
    page.keyboard.press("r")
    wait_version(page, 3)
    st = httpx.get(f"{url}/api/v1/jobs/{job}/status").json()
    assert st["task"]["kind"] == "refine" and st["task"]["params"]["slice_index"] == z1
    assert st["task"]["params"]["points"] == [[60, 50], [45, 66]]
    assert st["task"]["params"]["point_labels"] == [1, 0]

    # -- brush edit, saved as a new version with Ctrl+S; undo / redo across versions
    lab3 = api_labels(url, job, 3)
    page.keyboard.press("d")
    p0 = js(page, "window.segloop.voxelToClient(12, 15)")
    p1 = js(page, "window.segloop.voxelToClient(30, 15)")
    drag(page, p0, p1)
    page.mouse.up()
    assert js(page, "window.segloop.state.dirty") is True
    page.keyboard.press("Control+s")
    wait_version(page, 4)
    lab4 = api_labels(url, job, 4)
    assert lab3[12:31, 15, z1].sum() == 0 and (lab4[12:31, 15, z1] == 1).sum() >= 15
    page.keyboard.press("n")
    page.keyboard.press("Control+z")
    wait_version(page, 3)
    page.keyboard.press("Control+y")
    wait_version(page, 4)
    versions = page.locator("#versions").inner_text()
    assert "propagate · classic" in versions and "edit" in versions

    # -- several objects: add one, it gets its own label value
    page.click("#btn-add-object")
    page.wait_for_selector("#objects li[data-object-id='2'].current", timeout=TIMEOUT_MS)

    # -- mark reviewed
    page.click("#btn-review")
    page.wait_for_selector("#versions .badge.ok", timeout=TIMEOUT_MS)

    # -- export: the downloaded NIfTI equals the API's result, on the uploaded grid
    with page.expect_download(timeout=TIMEOUT_MS) as dl:
        page.click("#btn-download")
    got = tmp_path / "download.nii.gz"
    dl.value.save_as(str(got))
    api = httpx.get(f"{url}/api/v1/jobs/{job}/result?format=nii.gz")
    (tmp_path / "api.nii.gz").write_bytes(api.content)
    mine: Any = nib.load(str(got))
    theirs: Any = nib.load(str(tmp_path / "api.nii.gz"))
    src: Any = nib.load(str(ct))
    assert mine.shape == src.shape and np.allclose(mine.affine, src.affine)
    assert np.array_equal(np.asarray(mine.dataobj), np.asarray(theirs.dataobj))
    assert np.asarray(mine.dataobj).any()

    # -- multiplanar + 3D layout
    page.keyboard.press("5")
    page.wait_for_timeout(200)
    assert overlay_pixels(page, shots / "06_multiplanar.png") > 100
    page.keyboard.press("?")
    assert page.locator("#help").is_visible()
    page.screenshot(path=str(shots / "07_help.png"))
    page.keyboard.press("Escape")

    # -- resume: a fresh page lists the job; clicking it reopens the current version
    page.goto(url)
    page.wait_for_selector(f"#jobs li[data-job-id='{job}']", timeout=TIMEOUT_MS)
    page.click(f"#jobs li[data-job-id='{job}']")
    wait_version(page, 4)
    assert overlay_pixels(page) > 100
    # an object's colour is edited in place and the overlay follows
    page.locator("#objects li[data-object-id='1'] input[type=color]").fill("#00ff00")
    page.wait_for_function("() => window.segloop.state.objects[0].colour === '#00ff00'",
                           timeout=TIMEOUT_MS)
    page.wait_for_timeout(100)
    a = _rgb(page.locator("#gl").screenshot())
    green = int(((a[..., 1] - a[..., 0] > 60) & (a[..., 1] - a[..., 2] > 60)).sum())
    assert green > 100 and overlay_pixels(page) < 20
    assert page.errors == []


def test_rejected_upload_shows_the_api_message(server: LiveServer, page: Any,
                                               tmp_path: Path) -> None:
    bad = tmp_path / "notes.nii.gz"
    bad.write_bytes(b"this is not a medical image at all\n" * 20)
    expected = httpx.post(f"{server.url}/api/v1/jobs",
                          files={"file": (bad.name, bad.read_bytes())}, timeout=120)
    assert 400 <= expected.status_code < 500
    detail = expected.json()["detail"]
    page.goto(server.url)
    page.wait_for_selector("body[data-ready='1']", timeout=TIMEOUT_MS)
    # dropped onto the page (a real DataTransfer holding the file)
    dt = page.evaluate_handle(
        """([name, text]) => { const dt = new DataTransfer();
             dt.items.add(new File([text], name)); return dt; }""",
        [bad.name, bad.read_text(encoding="utf-8")])
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": dt})
    page.wait_for_selector("#message.error", timeout=TIMEOUT_MS)
    assert page.locator("#upload-error").is_visible()
    text = page.locator("#message").inner_text()
    # the API's own explanation (after any per-upload file name it starts with)
    reason = detail.split(": ", 1)[-1]
    assert reason in text and "Traceback" not in text
    page.screenshot(path=str(_shots(tmp_path) / "08_rejected.png"))


def test_missing_niivue_shows_npm_ci(page: Any, tmp_path: Path) -> None:
    need_browser()
    settings = make_settings(tmp_path / "home")
    with LiveServer(settings, node_modules=tmp_path / "empty_node_modules") as s:
        page.goto(s.url)
        page.wait_for_selector("body[data-ready='1']", timeout=TIMEOUT_MS)
        assert "npm ci" in page.locator("#banner").inner_text()


def test_progress_masks_round_trip() -> None:
    """The run-length slice masks of progress events decode (as viewer.js does) to the mask."""
    rng = np.random.default_rng(0)
    for shape in [(7, 5), (1, 1), (4, 3)]:
        for fill in (0.0, 0.5, 1.0):
            m = rng.random(shape) < fill
            runs = mask_runs(m)
            flat = np.zeros(m.size, bool)
            pos = 0
            for i, n in enumerate(runs):
                if i % 2:
                    flat[pos:pos + n] = True
                pos += n
            assert pos == m.size
            assert np.array_equal(flat.reshape(shape, order="F"), m)


def test_dicom_upload_exports_dicom_seg(server: LiveServer, page: Any, tmp_path: Path) -> None:
    """A zipped DICOM series (LPS, so canonical != source grid): the overlay the viewer shows is
    the API's canonical mask, and the page exports DICOM-SEG."""
    import zipfile

    import pydicom

    series = need_data() / "dcmqi" / "ct-3slice"
    zpath = tmp_path / "ct-3slice.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted(series.iterdir()):
            zf.write(f, f.name)
    page.goto(server.url)
    page.wait_for_selector("body[data-ready='1']", timeout=TIMEOUT_MS)
    page.set_input_files("#file-input", str(zpath))
    page.wait_for_selector("body[data-job]", timeout=TIMEOUT_MS)
    job = page.get_attribute("body", "data-job")
    assert page.locator("#btn-download-seg").is_enabled()
    page.keyboard.press("b")
    box = [200, 220, 330, 330]
    a = js(page, f"window.segloop.voxelToClient({box[0]}, {box[1]})")
    b = js(page, f"window.segloop.voxelToClient({box[2]}, {box[3]})")
    drag(page, a, b)
    page.mouse.up()
    assert js(page, "window.segloop.state.prompts.box") == box
    page.keyboard.press("s")
    wait_version(page, 1)
    page.screenshot(path=str(_shots(tmp_path) / "09_dicom_segmented.png"))
    labels = api_labels(server.url, job, 1)
    shown = np.array(js(page, "Array.from(window.segloop.nv.drawBitmap.keys())"
                              ".filter((i) => window.segloop.nv.drawBitmap[i] > 0)"))
    assert shown.size > 100
    assert np.array_equal(np.sort(shown), np.flatnonzero(labels.ravel(order="F")))
    with page.expect_download(timeout=TIMEOUT_MS) as dl:
        page.click("#btn-download-seg")
    seg_path = tmp_path / "seg.dcm"
    dl.value.save_as(str(seg_path))
    ds = pydicom.dcmread(str(seg_path))
    assert ds.Modality == "SEG"


def test_cancel_a_propagation_from_the_keyboard(server: LiveServer, page: Any) -> None:
    """Esc during a propagation cancels it; the slices painted so far are dropped again."""
    ct = need_data() / "totalseg" / "example_ct_sm.nii.gz"
    page.goto(server.url)
    page.wait_for_selector("body[data-ready='1']", timeout=TIMEOUT_MS)
    page.set_input_files("#file-input", str(ct))
    page.wait_for_selector("body[data-job]", timeout=TIMEOUT_MS)
    job = page.get_attribute("body", "data-job")
    page.keyboard.press("b")
    a = js(page, "window.segloop.voxelToClient(40, 40)")
    b = js(page, "window.segloop.voxelToClient(80, 70)")
    drag(page, a, b)
    page.mouse.up()
    page.keyboard.press("s")
    wait_version(page, 1)
    page.select_option("#engine", "slow-classic")
    page.keyboard.press("g")
    page.wait_for_function("() => window.segloop.state.paintedSlices >= 2", timeout=TIMEOUT_MS)
    assert page.locator("#btn-cancel").is_enabled()
    assert "ETA" in page.locator("#progress-text").inner_text()
    page.keyboard.press("Escape")
    page.wait_for_function("() => document.querySelector('#message').textContent.includes('cancelled')",
                           timeout=TIMEOUT_MS)
    assert page.get_attribute("body", "data-version") == "1"
    shown = js(page, "window.segloop.nv.drawBitmap.reduce((n, v) => n + (v > 0), 0)")
    assert shown == int((api_labels(server.url, job, 1) > 0).sum())
    st = httpx.get(f"{server.url}/api/v1/jobs/{job}/status").json()
    assert st["state"] == "cancelled" and st["current_version"] == 1


def test_recovering_event_is_shown_and_unknown_events_are_ignored(server: LiveServer,
                                                                  page: Any) -> None:
    """A ``recovering`` event (a task's worker was lost, it is queued again) shows in the
    progress bar and the message line; an event type the viewer does not know changes nothing."""
    ct = need_data() / "totalseg" / "example_ct_sm.nii.gz"
    page.goto(server.url)
    page.wait_for_selector("body[data-ready='1']", timeout=TIMEOUT_MS)
    page.set_input_files("#file-input", str(ct))
    page.wait_for_selector("body[data-job]", timeout=TIMEOUT_MS)
    job = page.get_attribute("body", "data-job")
    page.evaluate("() => window.segloop.state.esReady")
    bus = server.app.state.services.bus
    bus.publish(job, {"type": "from-the-future", "job_id": job, "stage": "whatever"})
    bus.publish(job, {"type": "recovering", "job_id": job, "task_id": "t-lost",
                      "kind": "propagate", "state": "queued", "stage": "recovering",
                      "attempts": 1, "reason": "worker w1 stopped reporting for more than 10 s"})
    page.wait_for_function("() => window.segloop.state.eventCounts.recovering === 1",
                           timeout=TIMEOUT_MS)
    assert "recovering (attempt 2)" in page.locator("#progress-text").inner_text()
    # the message follows the reload of the current version (the lost attempt's slices are
    # dropped first): under load that reload outlasts the count (a race seen in CI)
    page.wait_for_function("() => document.querySelector('#message').textContent.includes('worker lost')",
                           timeout=TIMEOUT_MS)
    assert js(page, "window.segloop.state.eventCounts['from-the-future'] === undefined")
    assert page.errors == []
