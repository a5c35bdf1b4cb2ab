"""The editing tools in a real headless Chromium on a real brain MR (pyradiomics brain1, a lesion).

A leaking propagation is made by adding what a leaking engine produces to a real propagation
(the classic engine does not leak on this lesion): the lesion runs on past its last slice, a
separate blob sits beside it on three slices, a stray region on one slice. The test fixes it
the way an annotator would, with the keyboard and the mouse (stop here, Shift+click remove in
3D, a − point + Refine), and checks that the mask is then exactly the propagation again. Then
the painting constraints, the sphere brush, fill between slices (a cleared gap, and two
brushed slices that do not overlap), objects (hide, outline, lock, measurements), opening a
mask file and deleting the job.
"""

from __future__ import annotations

import base64
import gzip
import os
import time
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np

from segloop.io import load_volume

from .conftest import LiveServer, need_data

TIMEOUT_MS = 30_000
OPEN_MS = 120_000  # opening the volume in SwiftShader, on a loaded 2-core machine


def _shots(tmp_path: Path) -> Path:
    d = Path(os.environ.get("SEGLOOP_WEB_SHOTS") or tmp_path / "shots")
    d.mkdir(parents=True, exist_ok=True)
    return d


def js(page: Any, expr: str) -> Any:
    return page.evaluate(f"() => {expr}")


def wait_version(page: Any, n: int, timeout_ms: int = TIMEOUT_MS) -> None:
    try:
        page.wait_for_selector(f"body[data-version='{n}']", timeout=timeout_ms)
    except Exception as exc:  # say what the page says
        raise AssertionError(f"version {n} not shown: {page.locator('#message').inner_text()!r}"
                             f", page errors {page.errors}, body version "
                             f"{page.get_attribute('body', 'data-version')}") from exc


def labels(url: str, job: str) -> np.ndarray:
    r = httpx.get(f"{url}/api/v1/jobs/{job}/result", params={"grid": "canonical"})
    r.raise_for_status()
    img: Any = nib.Nifti1Image.from_bytes(gzip.decompress(r.content))
    return np.asarray(img.dataobj)


def _wait_idle(url: str, job: str) -> None:
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/api/v1/jobs/{job}/status").json()["active_tasks"]:
        assert time.monotonic() < deadline, "the task did not finish"
        time.sleep(0.1)


def _canonical_affine(url: str, job: str) -> np.ndarray:
    r = httpx.get(f"{url}/api/v1/jobs/{job}/volume")  # served uncompressed
    img: Any = nib.Nifti1Image.from_bytes(r.content)
    return np.asarray(img.affine)


def _leaking_job(url: str, data: Path) -> tuple[str, np.ndarray, dict[str, Any]]:
    """Upload brain1, segment the lesion on its largest slice, propagate (version 2), then
    store version 3 = that mask + three kinds of leak; returns (job, version 2, leak info)."""
    src = data / "pyradiomics" / "brain1_image.nrrd"
    job = httpx.post(f"{url}/api/v1/jobs", files={"file": (src.name, src.read_bytes())},
                     timeout=60).json()["job_id"]
    lab = load_volume(data / "pyradiomics" / "brain1_label.nrrd")
    truth = np.asarray(lab.source_to_canonical(np.asarray(lab.data) > 0))
    z = int(np.argmax(truth.sum(axis=(0, 1))))
    xs, ys = np.nonzero(truth[:, :, z])
    box = [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
    httpx.post(f"{url}/api/v1/jobs/{job}/initial-mask", json={"slice_index": z, "box": box})
    _wait_idle(url, job)
    httpx.post(f"{url}/api/v1/jobs/{job}/propagate", json={})
    _wait_idle(url, job)
    good = labels(url, job)
    zs = np.flatnonzero(good.any(axis=(0, 1)))
    top = int(zs.max())
    cx, cy = (round(float(c)) for c in np.argwhere(good[:, :, top]).mean(axis=0))
    leak = good.copy()
    x, y = np.mgrid[:good.shape[0], :good.shape[1]]
    disc = (x - cx) ** 2 + (y - cy) ** 2 <= 12 ** 2
    for k in range(top + 1, min(top + 6, good.shape[2])):  # runs on past the lesion
        leak[:, :, k][disc] = 1
    bx, by = cx + 45, cy - 40  # a separate blob on three slices
    blob = (x - bx) ** 2 + (y - by) ** 2 <= 7 ** 2
    for k in range(z - 1, z + 2):
        leak[:, :, k][blob & (good[:, :, k] == 0)] = 1
    sx, sy, sz = cx - 40, cy + 30, int(zs.min()) + 1  # a stray region on one slice
    leak[sx - 4:sx + 5, sy - 4:sy + 5, sz] = 1
    aff = _canonical_affine(url, job)
    body = gzip.compress(nib.Nifti1Image(leak.astype(np.uint8), aff).to_bytes())
    r = httpx.put(f"{url}/api/v1/jobs/{job}/mask", content=body)
    assert r.json()["version"] == 3, r.text
    info = {"top": top, "anchor": z, "blob": (bx, by, z), "stray": (sx, sy, sz), "affine": aff,
            "truth": truth}
    return job, good, info


def _open_job(page: Any, url: str, job: str, version: int = 3) -> None:
    """Open ``job`` in the viewer by its URL and wait until it shows ``version``."""
    page.goto(f"{url}/#job={job}")
    wait_version(page, version, OPEN_MS)


def _open_leaking_job(page: Any, url: str) -> tuple[str, np.ndarray, dict[str, Any]]:
    """:func:`_leaking_job` on the shared brain MR, opened in the viewer at its version 3."""
    job, good, info = _leaking_job(url, need_data())
    _open_job(page, url, job)
    return job, good, info


def bitmap(page: Any) -> np.ndarray:
    """NiiVue's drawing bitmap as an (X, Y, Z) label map."""
    dims = js(page, "window.segloop.state.dims")
    b64 = js(page, """(() => { const b = window.segloop.nv.drawBitmap; let s = '';
        for (let i = 0; i < b.length; i += 8192) s += String.fromCharCode(...b.subarray(i, i + 8192));
        return btoa(s); })()""")
    return np.frombuffer(base64.b64decode(b64), np.uint8).reshape(dims, order="F")


def set_size(page: Any, n: int) -> None:
    """Type a brush size, then leave the field (keys go to the viewer again)."""
    page.fill("#pen-size", str(n))
    page.dispatch_event("#pen-size", "change")
    page.evaluate("() => document.activeElement.blur()")


def _click_voxel(page: Any, x: int, y: int, *, shift: bool = False,
                 button: str = "left") -> None:
    p = js(page, f"window.segloop.voxelToClient({x}, {y})")
    if shift:
        page.keyboard.down("Shift")
    page.mouse.click(p[0], p[1], button=button)
    if shift:
        page.keyboard.up("Shift")


def test_fix_a_leaking_propagation_on_brain_mr(server: LiveServer, page: Any,
                                               tmp_path: Path) -> None:
    shots = _shots(tmp_path)
    url = server.url
    job, good, info = _open_leaking_job(page, url)
    js(page, f"window.segloop.setSlice({info['top'] + 2})")
    page.screenshot(path=str(shots / "tools_01_leak.png"))

    t0 = time.monotonic()
    # 1. stop here: on the lesion's last good slice, K clears everything beyond it
    js(page, f"window.segloop.setSlice({info['top']})")
    page.keyboard.press("k")
    wait_version(page, 4)
    assert page.input_value("#range-last") == str(info["top"])
    # 2. the remove tool: Shift+click the separate blob removes it through the volume
    bx, by, bz = info["blob"]
    js(page, f"window.segloop.setSlice({bz})")
    page.keyboard.press("x")
    _click_voxel(page, bx, by, shift=True)
    wait_version(page, 5)
    # 3. a − point on the stray region + Refine removes the region it lands in
    sx, sy, sz = info["stray"]
    js(page, f"window.segloop.setSlice({sz})")
    page.keyboard.press("p")
    _click_voxel(page, sx, sy, button="right")
    page.keyboard.press("r")
    wait_version(page, 6)
    fix_s = time.monotonic() - t0
    print(f"leak fixed in {fix_s:.1f} s of browser time (3 actions)")
    page.screenshot(path=str(shots / "tools_02_fixed.png"))

    now = labels(url, job)
    assert np.array_equal(now, good), "the fixed mask differs from the propagation"
    vs = httpx.get(f"{url}/api/v1/jobs/{job}/versions").json()
    assert [v["source"] for v in vs][3:] == ["edit:keep-slices", "edit:remove-region",
                                             "edit:remove-region"]
    # a later propagation keeps the range: nothing above the stop slice
    page.keyboard.press("g")
    wait_version(page, 7)
    assert not labels(url, job)[:, :, info["top"] + 1:].any()
    # undo goes back one edit at a time
    page.keyboard.press("Control+z")
    wait_version(page, 6)
    assert page.errors == []


def test_paint_constraints_objects_and_measurements(server: LiveServer, page: Any,
                                                    tmp_path: Path) -> None:
    shots = _shots(tmp_path)
    url = server.url
    job, good, info = _open_leaking_job(page, url)
    z = info["anchor"]
    js(page, f"window.segloop.setSlice({z})")
    lesion = np.argwhere(good[:, :, z] == 1)
    cx, cy = (int(c) for c in lesion.mean(axis=0))

    # measurements of the version shown, as the API computes them
    api_m = {m["label_value"]: m for m in
             httpx.get(f"{url}/api/v1/jobs/{job}/measurements").json()}
    page.wait_for_function("() => (window.segloop.state.measures || {})[1]", timeout=TIMEOUT_MS)
    page.evaluate("document.querySelector('#edit-box').open = true")  # folded below 900 px
    text = page.locator("#objects li[data-object-id='1'] .measure").inner_text()
    assert f"{api_m[1]['voxels']} vox" in text and "mL" in text

    one = bitmap(page) == 1  # object 1 as shown (the leaking version 3)
    # object 2; brush across the lesion with paint-over off: the lesion is kept
    page.keyboard.press("a")
    page.wait_for_function("() => window.segloop.state.currentObject === 2")
    set_size(page, 7)
    page.keyboard.press("d")
    a = js(page, f"window.segloop.voxelToClient({cx - 30}, {cy})")
    b = js(page, f"window.segloop.voxelToClient({cx + 30}, {cy})")
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move(*b, steps=12)
    page.screenshot(path=str(shots / "tools_03_brush_cursor.png"))
    page.mouse.up()
    bm = bitmap(page)
    assert np.array_equal(bm == 1, one), "the brush painted over object 1"
    assert (bm[:, :, z] == 2).sum() > 100
    assert js(page, "window.segloop.state.constrainedVoxels") > 0

    # the eraser of object 2 erases object 2 only
    page.keyboard.press("e")
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move(*b, steps=12)
    page.mouse.up()
    bm = bitmap(page)
    assert np.array_equal(bm == 1, one) and not (bm == 2).any()

    # paint only an intensity range: every painted voxel is in it
    vals = js(page, f"window.segloop.nv.back.getValue({cx}, {cy}, {z})")
    page.check("#paint-range")
    page.fill("#paint-lo", str(vals - 50))
    page.fill("#paint-hi", str(vals + 50))
    page.evaluate("() => document.activeElement.blur()")
    page.keyboard.press("d")
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move(*b, steps=12)
    page.mouse.up()
    inside = js(page, f"""(() => {{ const n = window.segloop.nv, [nx, ny] = window.segloop.state.dims;
        let bad = 0, ok = 0; const off = {z} * nx * ny;
        for (let i = 0; i < nx * ny; i++) if (n.drawBitmap[off + i] === 2) {{
          const v = n.back.getValue(i % nx, Math.floor(i / nx), {z});
          if (v >= {vals - 50} && v <= {vals + 50}) ok++; else bad++; }}
        return [ok, bad]; }})()""")
    assert inside[0] > 0 and inside[1] == 0, inside
    page.uncheck("#paint-range")

    # sphere brush: a ball through neighbouring slices (6.5 mm slices, size 20 = 7.8 mm)
    page.keyboard.press("Shift+B")
    set_size(page, 20)
    js(page, "window.segloop.setSlice(5)")
    _click_voxel(page, 40, 40)
    js(page, "window.segloop.setSlice(2)")
    _click_voxel(page, 40, 40)
    bm = bitmap(page)
    on = [k for k in range(good.shape[2]) if (bm[30:50, 30:50, k] == 2).any()]
    assert on == [1, 2, 3, 4, 5, 6], on
    page.keyboard.press("Control+s")
    page.wait_for_function("() => !window.segloop.state.dirty", timeout=TIMEOUT_MS)
    v_saved = int(page.get_attribute("body", "data-version"))

    # fill between slices: the two balls overlap on 3..4; clear those (API) and fill them (I)
    r = httpx.post(f"{url}/api/v1/jobs/{job}/edit", json={"op": "clear-slices", "object_id": 2,
                                                        "first_slice": 3, "last_slice": 4})
    wait_version(page, r.json()["version"])
    page.keyboard.press("i")
    wait_version(page, r.json()["version"] + 1)
    filled = labels(url, job)
    assert all((filled[30:50, 30:50, k] == 2).any() for k in (3, 4))
    assert v_saved < r.json()["version"]

    # hide object 2, outline mode, lock object 1 against paint-over
    page.locator("#objects li[data-object-id='2'] .obj-hide").click()
    assert js(page, "window.segloop.nv.drawLut.lut[2 * 4 + 3]") == 0
    js(page, f"window.segloop.setSlice({z})")
    page.keyboard.press("t")
    assert js(page, "window.segloop.nv.drawRimOpacity") == 1
    page.screenshot(path=str(shots / "tools_04_outline_object2_hidden.png"))
    page.keyboard.press("t")
    page.locator("#objects li[data-object-id='1'] .obj-lock").click()
    page.check("#paint-over")
    js(page, f"window.segloop.setSlice({z})")
    set_size(page, 7)
    page.keyboard.press("d")
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move(*b, steps=12)
    page.mouse.up()
    assert np.array_equal(bitmap(page) == 1, labels(url, job) == 1), "object 1 is locked"
    assert page.errors == []


def test_fill_between_two_brushed_slices_that_do_not_overlap(server: LiveServer, page: Any
                                                              ) -> None:
    """Brush a bar on axial slice 10 and the bar moved sideways on slice 14 (they do not
    overlap: the structure moved), save, ``I``: slices 11..13 hold the bar between the two."""
    url = server.url
    src = need_data() / "pyradiomics" / "brain1_image.nrrd"
    job = httpx.post(f"{url}/api/v1/jobs", files={"file": (src.name, src.read_bytes())},
                     timeout=60).json()["job_id"]
    _open_job(page, url, job, version=0)
    page.keyboard.press("d")
    set_size(page, 7)
    for z, (a, b) in ((10, ((150, 90), (180, 90))), (14, ((160, 115), (190, 115)))):
        js(page, f"window.segloop.setSlice({z}, 2)")
        page.mouse.move(*js(page, f"window.segloop.voxelToClient({a[0]}, {a[1]})"))
        page.mouse.down()
        page.mouse.move(*js(page, f"window.segloop.voxelToClient({b[0]}, {b[1]})"), steps=12)
        page.mouse.up()
    page.keyboard.press("Control+s")
    wait_version(page, 1)
    drawn = labels(url, job) == 1
    assert [k for k in range(drawn.shape[2]) if drawn[:, :, k].any()] == [10, 14]
    page.keyboard.press("i")
    wait_version(page, 2)
    page.wait_for_function("() => document.querySelector('#message').textContent"
                           ".startsWith('Filled between slices')", timeout=TIMEOUT_MS)
    filled = labels(url, job) == 1
    area = drawn[:, :, 10].sum()
    for k in (11, 12, 13):
        assert abs(int(filled[:, :, k].sum()) - area) < 0.25 * area, k
        y = np.argwhere(filled[:, :, k]).mean(axis=0)[1]
        assert 90 + 25 * (k - 10) / 4 - 2 < y < 90 + 25 * (k - 10) / 4 + 2, (k, y)
    assert page.errors == []


def test_open_a_mask_file_and_delete_the_job(server: LiveServer, page: Any,
                                             tmp_path: Path) -> None:
    url = server.url
    job, _, info = _open_leaking_job(page, url)
    f = tmp_path / "lesion_truth.nii.gz"
    nib.save(nib.Nifti1Image(info["truth"].astype(np.uint8), info["affine"]), str(f))
    page.set_input_files("#mask-input", str(f))
    wait_version(page, 4)
    assert np.array_equal(labels(url, job) == 1, info["truth"])
    # a file that is not a mask: the server's reason, nothing stored
    bad = tmp_path / "notes.nii.gz"
    bad.write_bytes(gzip.compress(b"not a nifti" * 50))
    page.set_input_files("#mask-input", str(bad))
    page.wait_for_selector("#message.error", timeout=TIMEOUT_MS)
    assert "notes.nii.gz" in page.locator("#message").inner_text()
    assert len(httpx.get(f"{url}/api/v1/jobs/{job}/versions").json()) == 4

    page.on("dialog", lambda d: d.accept())
    page.evaluate("document.querySelector('#jobs-box').open = true")  # folded below 900 px
    row = page.locator(f"#jobs li[data-job-id='{job}']")
    row.hover()
    row.locator(".job-delete").click()
    page.wait_for_function("() => !document.body.dataset.job", timeout=TIMEOUT_MS)
    assert httpx.get(f"{url}/api/v1/jobs/{job}").status_code == 404
    page.wait_for_selector(f"#jobs li[data-job-id='{job}']", state="detached",
                           timeout=TIMEOUT_MS)
    assert "Deleted" in page.locator("#message").inner_text()
    assert page.errors == []


def test_structure_names_and_series_description_go_into_the_seg(server: LiveServer, page: Any,
                                                                tmp_path: Path) -> None:
    """Name the object from the SNOMED list, type a SeriesDescription, download the DICOM-SEG:
    the segment has that code and the series that description."""
    import zipfile

    import pydicom

    series = need_data() / "dcmqi" / "ct-3slice"
    zpath = tmp_path / "ct-3slice.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted(series.iterdir()):
            zf.write(f, f.name)
    url = server.url
    job = httpx.post(f"{url}/api/v1/jobs", files={"file": (zpath.name, zpath.read_bytes())},
                     timeout=60).json()
    jid = job["job_id"]
    lab = np.zeros(job["shape"], np.uint8)
    lab[200:260, 220:300, 1] = 1
    body = gzip.compress(nib.Nifti1Image(lab, _canonical_affine(url, jid)).to_bytes())
    assert httpx.put(f"{url}/api/v1/jobs/{jid}/mask", content=body).status_code == 200
    _open_job(page, url, jid, version=1)
    page.wait_for_function("() => document.querySelectorAll('#structures option').length > 0",
                           timeout=TIMEOUT_MS)  # fetched once the job is shown
    options = page.eval_on_selector_all("#structures option", "os => os.map((o) => o.value)")
    assert "Liver" in options and "Lesion" in options
    name = page.locator("#objects li[data-object-id='1'] input[type=text]")
    assert name.get_attribute("list") == "structures"
    name.fill("Liver")
    name.press("Enter")
    page.wait_for_function("() => window.segloop.state.objects[0].name === 'Liver'",
                           timeout=TIMEOUT_MS)
    # the code the segment gets is shown under the name (the datalist shows it only while open)
    code_line = page.locator("#objects li[data-object-id='1'] .obj-code")
    code_line.wait_for(timeout=TIMEOUT_MS)
    assert code_line.inner_text() == "SCT 10200004"
    assert "Anatomical Structure" in (code_line.get_attribute("title") or "")
    page.fill("#seg-description", "liver, reader 2")
    with page.expect_download(timeout=TIMEOUT_MS) as dl:
        page.click("#btn-download-seg")
    seg_path = tmp_path / "seg.dcm"
    dl.value.save_as(str(seg_path))
    ds = pydicom.dcmread(str(seg_path))
    assert ds.SeriesDescription == "liver, reader 2"
    code = ds.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0]
    assert (code.CodeValue, code.CodeMeaning) == ("10200004", "Liver")
    # a free name has no code of the list: no line (the export guesses one from its words)
    name = page.locator("#objects li[data-object-id='1'] input[type=text]")
    name.fill("reader 2's region")
    name.press("Enter")
    page.wait_for_function("() => window.segloop.state.objects[0].name === \"reader 2's region\"",
                           timeout=TIMEOUT_MS)
    assert page.locator("#objects li[data-object-id='1'] .obj-code").count() == 0
    assert page.errors == []
