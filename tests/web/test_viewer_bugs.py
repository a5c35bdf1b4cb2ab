"""The viewer bugs of issue 15, each reproduced with real mouse and keyboard events in Chromium.

Every test here failed on the viewer before its fix (``git log`` of this file's commit says how
that was checked) and drives the page as an annotator would: mouse drags, wheel, key presses, the
job list, the address bar. Volumes are real files from ``../shared/data`` uploaded to a real
segloop server; screenshots go to $SEGLOOP_WEB_SHOTS (or tmp_path).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from .conftest import LiveServer, need_data
from .test_viewer import TIMEOUT_MS, _shots, drag, js, wait_version

CT = ("totalseg", "example_ct_sm.nii.gz")  # 122 x 101 x 30, CT
MR = ("totalseg", "example_mr_sm.nii.gz")  # 117 x 91 x 20, MR


def upload(server: LiveServer, rel: tuple[str, str]) -> str:
    """Upload a shared-data volume through the API; its job id."""
    path = need_data().joinpath(*rel)
    r = httpx.post(f"{server.url}/api/v1/jobs", files={"file": (path.name, path.read_bytes())},
                   timeout=120)
    r.raise_for_status()
    return str(r.json()["job_id"])


def open_job(page: Any, server: LiveServer, job: str) -> None:
    """Open the page on ``#job=`` (a fresh page load) and wait until the job is shown."""
    page.goto(f"{server.url}/#job={job}")
    page.wait_for_selector(f"body[data-ready='1'][data-job='{job}']", timeout=TIMEOUT_MS)


def vox(page: Any) -> list[int]:
    return list(js(page, "window.segloop.currentVox()"))


def window(page: Any) -> list[float]:
    return list(js(page, "[window.segloop.nv.back.cal_min, window.segloop.nv.back.cal_max]"))


def state_pill(page: Any) -> str:
    return str(page.get_attribute("#state", "data-state"))


def draw_box(page: Any, box: list[int]) -> None:
    page.keyboard.press("b")
    a = js(page, f"window.segloop.voxelToClient({box[0]}, {box[1]})")
    b = js(page, f"window.segloop.voxelToClient({box[2]}, {box[3]})")
    drag(page, a, b)
    page.mouse.up()


def stroke(page: Any, y: int, x0: int = 12, x1: int = 30) -> None:
    """One brush/eraser stroke along row ``y`` of the axial slice shown."""
    drag(page, js(page, f"window.segloop.voxelToClient({x0}, {y})"),
         js(page, f"window.segloop.voxelToClient({x1}, {y})"))
    page.mouse.up()


def pick_job(page: Any, job: str) -> None:
    """Click a job in *Earlier jobs*, unfolding the list first if it is folded."""
    if not js(page, "document.querySelector('#jobs-box').open"):
        page.click("#jobs-box summary", position={"x": 40, "y": 8})
    page.click(f"#jobs li[data-job-id='{job}']")


def painted(page: Any) -> int:
    return int(js(page, "window.segloop.nv.drawBitmap.reduce((n, v) => n + (v > 0), 0)"))


def test_1_right_drag_sets_window_level_live_and_shift_drag_pans(
        server: LiveServer, page: Any, tmp_path: Path) -> None:
    open_job(page, server, upload(server, CT))
    assert page.input_value("#wl-preset") == "400,40"
    w0 = window(page)
    c = js(page, "window.segloop.voxelToClient(61, 50)")
    page.mouse.move(*c)
    page.mouse.down(button="right")
    page.mouse.move(c[0] + 40, c[1] + 25, steps=3)
    w1 = window(page)  # still dragging: the window follows the mouse, as in every viewer
    assert w1 != w0, "window/level does not change while right-dragging"
    page.mouse.move(c[0] + 90, c[1] + 60, steps=3)
    w2 = window(page)
    assert w2 != w1
    page.wait_for_function("() => document.querySelector('#wl-preset').value === 'custom'",
                           timeout=TIMEOUT_MS)
    assert page.locator("#wl-readout").inner_text() != "W 400 L 40"
    page.screenshot(path=str(_shots(tmp_path) / "bug1_wl_live_drag.png"))
    page.mouse.up(button="right")
    assert window(page) == w2
    # a preset brings the menu back from "Custom"
    page.select_option("#wl-preset", "400,40")
    assert page.locator("#wl-readout").inner_text() == "W 400 L 40"
    # Shift-drag pans the slice; the crosshair stays where it was
    v0, pan0 = vox(page), js(page, "Array.from(window.segloop.nv.scene.pan2Dxyzmm)")
    page.keyboard.down("Shift")
    drag(page, c, [c[0] + 80, c[1] + 50])
    page.mouse.up()
    page.keyboard.up("Shift")
    assert js(page, "Array.from(window.segloop.nv.scene.pan2Dxyzmm)")[:3] != pan0[:3], \
        "Shift-drag does not pan"
    assert vox(page) == v0, "Shift-drag moved the crosshair"
    assert page.errors == []


def test_2_a_task_that_ends_before_its_post_answers_leaves_the_page_idle(
        server: LiveServer, page: Any, tmp_path: Path) -> None:
    job = upload(server, CT)
    open_job(page, server, job)
    draw_box(page, [40, 40, 80, 70])

    def late_answer(route: Any) -> None:
        resp = route.fetch()  # the server has queued the task: let it finish first
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st = httpx.get(f"{server.url}/api/v1/jobs/{job}/status", timeout=30).json()
            if st["state"] == "succeeded":
                break
            time.sleep(0.1)
        time.sleep(1.5)  # and its `done` event reach the page
        route.fulfill(response=resp)

    page.route("**/initial-mask", late_answer)
    page.keyboard.press("s")
    wait_version(page, 1)
    page.wait_for_function("() => window.segloop.state.eventCounts.done >= 1", timeout=TIMEOUT_MS)
    page.wait_for_function("() => document.querySelector('#message').textContent.includes('done')",
                           timeout=TIMEOUT_MS)
    page.wait_for_timeout(2500)  # the POST answer has come by now
    assert js(page, "window.segloop.state.activeTask") is None
    assert page.locator("#btn-cancel").is_disabled(), "Cancel stays enabled after the task ended"
    assert state_pill(page) == "idle"
    assert page.locator("#progress").is_hidden()
    page.screenshot(path=str(_shots(tmp_path) / "bug2_idle_after_early_done.png"))
    # the next job starts clean too
    open_job(page, server, upload(server, CT))
    assert page.locator("#btn-cancel").is_disabled() and state_pill(page) == "idle"


def test_3_the_wheel_scrolls_the_same_way_with_every_tool(server: LiveServer, page: Any) -> None:
    open_job(page, server, upload(server, CT))
    page.mouse.move(*js(page, "window.segloop.voxelToClient(61, 50)"))
    for key, tool in (("n", "navigate"), ("b", "box"), ("p", "points"), ("d", "brush")):
        page.keyboard.press(key)
        assert js(page, "window.segloop.state.tool") == tool
        z = vox(page)[2]
        page.mouse.wheel(0, -120)
        page.wait_for_timeout(150)
        assert vox(page)[2] == z + 1, f"wheel up with the {tool} tool: {z} -> {vox(page)[2]}"
        page.mouse.wheel(0, 120)
        page.wait_for_timeout(150)
        assert vox(page)[2] == z, f"wheel down with the {tool} tool"


def test_4_slice_keys_wheel_and_slider_step_along_the_view_shown(
        server: LiveServer, page: Any, tmp_path: Path) -> None:
    open_job(page, server, upload(server, CT))
    dims = js(page, "window.segloop.state.dims")
    for key, axis, name in (("2", 1, "Coronal"), ("3", 0, "Sagittal"), ("1", 2, "Axial")):
        page.keyboard.press(key)
        page.wait_for_timeout(100)
        v0 = vox(page)
        page.keyboard.press("ArrowUp")
        v1 = vox(page)
        want = list(v0)
        want[axis] += 1
        assert v1 == want, f"{name}: ArrowUp moved {v0} -> {v1}"
        assert page.locator("#slice-axis").inner_text() == name
        assert page.get_attribute("#slice", "max") == str(dims[axis] - 1)
        assert page.locator("#slice-label").inner_text() == f"{v1[axis]} / {dims[axis] - 1}"
        # the wheel over the view steps the same axis
        box = page.locator("#gl").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.wheel(0, 120)
        page.wait_for_timeout(150)
        assert vox(page) == v0, f"{name}: the wheel moved {v1} -> {vox(page)}"
        # the slider, clicked near its right end, goes to a late slice of that axis
        slider = page.locator("#slice")
        slider.click(position={"x": slider.bounding_box()["width"] - 6, "y": 5})
        v2 = vox(page)
        assert v2[axis] >= dims[axis] - 3 and [v2[i] for i in range(3) if i != axis] == \
            [v0[i] for i in range(3) if i != axis], f"{name}: slider moved {v0} -> {v2}"
        if axis == 1:
            page.screenshot(path=str(_shots(tmp_path) / "bug4_coronal_slider.png"))


def test_5_niivue_canvas_hotkeys_do_not_change_the_view(server: LiveServer, page: Any,
                                                         tmp_path: Path) -> None:
    open_job(page, server, upload(server, CT))
    page.keyboard.press("5")  # multiplanar + 3D: clip planes would show in the render
    c = js(page, "window.segloop.voxelToClient(61, 50)")
    page.mouse.click(*c)  # the canvas has the focus, the cursor is over it
    assert js(page, "document.activeElement.id") == "gl"
    clip = "JSON.stringify([window.segloop.nv.scene.clipPlaneDepthAziElevs, " \
           "window.segloop.nv.uiData.activeClipPlaneIndex, window.segloop.nv.currentClipPlaneIndex])"
    before = js(page, clip)
    for key in ("c", "v", "p", "c", "v"):
        page.keyboard.press(key)
        page.wait_for_timeout(60)  # past NiiVue's key debounce
    assert js(page, "window.segloop.nv.opts.sliceType") == 3, "V switched NiiVue's view"
    assert page.locator("#views button.active").inner_text() == "Multi"
    assert js(page, clip) == before, "C / P changed NiiVue's clip plane"
    page.screenshot(path=str(_shots(tmp_path) / "bug5_multi_after_c_v_p.png"))
    assert page.errors == []


def test_6_unsaved_edits_are_asked_about_before_they_are_lost(
        server: LiveServer, page: Any, tmp_path: Path) -> None:
    a, b = upload(server, CT), upload(server, MR)
    open_job(page, server, a)
    page.keyboard.press("d")
    stroke(page, 15)
    assert js(page, "window.segloop.state.dirty") is True
    # another job from the list: the page asks; "stay" keeps the job and the edit
    pick_job(page, b)
    page.wait_for_selector("#unsaved-dialog[open]", timeout=TIMEOUT_MS)
    page.screenshot(path=str(_shots(tmp_path) / "bug6_unsaved_prompt.png"))
    page.click("#unsaved-dialog button[value=stay]")
    page.wait_for_timeout(300)
    assert page.get_attribute("body", "data-job") == a
    assert js(page, "window.segloop.state.dirty") is True
    # again, "save": the edit becomes version 1 of job a, then job b opens
    pick_job(page, b)
    page.click("#unsaved-dialog button[value=save]")
    page.wait_for_selector(f"body[data-job='{b}']", timeout=TIMEOUT_MS)
    versions = httpx.get(f"{server.url}/api/v1/jobs/{a}/versions", timeout=30).json()
    assert [v["source"] for v in versions] == ["edit"]
    # an edit on b, then "discard" when opening a: nothing is saved on b
    page.keyboard.press("d")
    stroke(page, 20)
    pick_job(page, a)
    page.click("#unsaved-dialog button[value=discard]")
    page.wait_for_selector(f"body[data-job='{a}']", timeout=TIMEOUT_MS)
    assert httpx.get(f"{server.url}/api/v1/jobs/{b}/versions", timeout=30).json() == []
    # closing or reloading the tab with an unsaved stroke: the browser asks first
    page.keyboard.press("d")
    stroke(page, 25)
    seen: list[str] = []
    page.on("dialog", lambda d: (seen.append(d.type), d.dismiss()))
    page.close(run_before_unload=True)
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert seen == ["beforeunload"]


def test_6_ctrl_z_undoes_one_brush_stroke_at_a_time(server: LiveServer, page: Any) -> None:
    job = upload(server, CT)
    open_job(page, server, job)
    page.keyboard.press("d")
    stroke(page, 15)
    n1 = painted(page)
    stroke(page, 30)
    n2 = painted(page)
    assert 0 < n1 < n2
    assert page.get_attribute("body", "data-strokes") == "2"
    assert page.locator("#btn-undo").is_enabled()
    page.keyboard.press("Control+z")
    assert painted(page) == n1, "Ctrl+Z did not undo exactly the last stroke"
    assert js(page, "window.segloop.state.dirty") is True
    page.keyboard.press("Control+y")
    assert painted(page) == n2
    page.keyboard.press("Control+z")
    page.keyboard.press("Control+z")
    assert painted(page) == 0 and js(page, "window.segloop.state.dirty") is False
    page.keyboard.press("Control+y")  # the first stroke again, then saved as version 1
    assert painted(page) == n1
    page.keyboard.press("Control+s")
    wait_version(page, 1)
    assert httpx.get(f"{server.url}/api/v1/jobs/{job}/versions", timeout=30).json()[0]["source"] \
        == "edit"


def test_7_a_job_url_pasted_into_an_open_tab_opens_that_job(server: LiveServer, page: Any,
                                                             tmp_path: Path) -> None:
    a, b = upload(server, CT), upload(server, MR)
    open_job(page, server, a)
    page.goto(f"{server.url}/#job={b}")  # same page, another fragment: no reload
    page.wait_for_selector(f"body[data-job='{b}']", timeout=TIMEOUT_MS)
    assert js(page, "window.segloop.state.job.job_id") == b
    page.screenshot(path=str(_shots(tmp_path) / "bug7_hash_opened_mr.png"))
    page.go_back()
    page.wait_for_selector(f"body[data-job='{a}']", timeout=TIMEOUT_MS)


def test_8_undo_and_redo_are_disabled_when_there_is_nothing_to_do(
        server: LiveServer, page: Any, tmp_path: Path) -> None:
    open_job(page, server, upload(server, CT))
    assert page.locator("#btn-undo").is_disabled() and page.locator("#btn-redo").is_disabled()
    page.keyboard.press("Control+z")
    page.keyboard.press("Control+y")
    page.wait_for_timeout(300)
    assert state_pill(page) == "idle", page.locator("#message").inner_text()
    assert "409" not in page.locator("#message").inner_text()
    draw_box(page, [40, 40, 80, 70])
    page.keyboard.press("s")
    wait_version(page, 1)
    page.wait_for_function("() => !document.querySelector('#btn-undo').disabled",
                           timeout=TIMEOUT_MS)
    assert page.locator("#btn-redo").is_disabled()
    page.keyboard.press("Control+y")
    page.wait_for_timeout(300)
    assert state_pill(page) == "idle"
    page.keyboard.press("Control+z")
    wait_version(page, 0)
    page.wait_for_function("() => !document.querySelector('#btn-redo').disabled",
                           timeout=TIMEOUT_MS)
    assert page.locator("#btn-undo").is_disabled()
    page.screenshot(path=str(_shots(tmp_path) / "bug8_undo_disabled_at_v0.png"))
    page.click("#btn-redo")
    wait_version(page, 1)
    assert state_pill(page) == "idle"


def test_9_engines_that_cannot_run_are_greyed_and_errors_speak_to_a_web_user(
        server: LiveServer, page: Any, tmp_path: Path) -> None:
    engines = httpx.get(f"{server.url}/api/v1/system/engines", timeout=30).json()
    assert "classic" not in engines["unavailable"]
    open_job(page, server, upload(server, CT))
    options = js(page, "Array.from(document.querySelectorAll('#engine option'))"
                       ".map((o) => [o.value, o.disabled])")
    for value, disabled in options:
        assert disabled == (value in engines["unavailable"]), value
    assert ["classic", False] in options
    # propagating an object that has no mask yet: what to do, in the page's words
    page.keyboard.press("g")
    page.wait_for_selector("#message.error", timeout=TIMEOUT_MS)
    text = page.locator("#message").inner_text()
    assert "POST" not in text and "segment a slice" in text.lower(), text
    assert state_pill(page) == "idle"
    page.screenshot(path=str(_shots(tmp_path) / "bug9_propagate_without_mask.png"))


def test_9_w_cycles_only_the_presets_that_fit_the_modality(server: LiveServer,
                                                          page: Any) -> None:
    open_job(page, server, upload(server, MR))
    assert js(page, "window.segloop.state.job.modality") != "CT"
    seen = set()
    for _ in range(6):
        page.keyboard.press("w")
        seen.add(page.input_value("#wl-preset"))
    assert seen == {"auto", "full"}, seen
    hidden = js(page, "Array.from(document.querySelectorAll('#wl-preset option'))"
                      ".filter((o) => !o.hidden).map((o) => o.value)")
    assert hidden == ["auto", "full"]


def test_9_a_new_job_opens_at_its_centre(server: LiveServer, page: Any) -> None:
    a, b = upload(server, CT), upload(server, MR)
    open_job(page, server, a)
    page.keyboard.press("Home")
    c = js(page, "window.segloop.voxelToClient(10, 12)")
    page.mouse.click(*c)
    assert vox(page)[2] == 0
    pick_job(page, b)
    page.wait_for_selector(f"body[data-job='{b}']", timeout=TIMEOUT_MS)
    dims = js(page, "window.segloop.state.dims")
    assert vox(page) == [n // 2 for n in dims]


def test_9_a_rejected_file_is_named_once(server: LiveServer, page: Any, tmp_path: Path) -> None:
    bad = tmp_path / "notes.nii.gz"
    bad.write_bytes(b"this is not a medical image at all\n" * 20)
    page.goto(server.url)
    page.wait_for_selector("body[data-ready='1']", timeout=TIMEOUT_MS)
    page.set_input_files("#file-input", str(bad))
    page.wait_for_selector("#message.error", timeout=TIMEOUT_MS)
    for sel in ("#message", "#upload-error"):
        text = page.locator(sel).inner_text()
        assert text.count("notes.nii.gz") == 1, text
        assert text.startswith("notes.nii.gz was rejected: ")


def test_6_unsaved_strokes_are_kept_as_a_draft_and_offered_back(server: LiveServer, page: Any,
                                                                 tmp_path: Path) -> None:
    job = upload(server, CT)
    open_job(page, server, job)
    page.keyboard.press("d")
    stroke(page, 15)
    n = painted(page)
    page.wait_for_selector("body[data-draft='kept']", timeout=TIMEOUT_MS)
    page.on("dialog", lambda d: d.accept())  # the browser's "leave the page?" on reload
    page.reload()
    page.wait_for_selector(f"body[data-ready='1'][data-job='{job}']", timeout=TIMEOUT_MS)
    assert painted(page) == 0
    page.wait_for_selector("#draft-bar:not(.hidden)", timeout=TIMEOUT_MS)
    assert "Unsaved edits" in page.locator("#draft-bar").inner_text()
    page.screenshot(path=str(_shots(tmp_path) / "draft_offered_after_reload.png"))
    page.click("#btn-draft-restore")
    assert painted(page) == n and js(page, "window.segloop.state.dirty") is True
    page.keyboard.press("Control+s")
    wait_version(page, 1)
    assert page.locator("#draft-bar").is_hidden()
    page.reload()
    page.wait_for_selector(f"body[data-ready='1'][data-job='{job}']", timeout=TIMEOUT_MS)
    page.wait_for_timeout(300)
    assert page.locator("#draft-bar").is_hidden(), "a saved draft is offered again"
    assert painted(page) == n
