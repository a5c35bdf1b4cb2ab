"""Screenshots of segloop doing the Segment Editor's tasks, for docs/web.md's comparison.

Each task of the issue's list that 3D Slicer's Segment Editor has an effect for is done in the
page, in headless Chromium (Debian's ``/usr/bin/chromium``, SwiftShader WebGL) with real mouse
and keyboard events, against an in-process segloop server, on pyradiomics' brain1 MR of
``../shared/data`` with its lesion label:

1. open a mask: the lesion label plus three made-up leaks (a run past the lesion's last slice,
   a separate blob, a stray square) opened through the page's mask input;
2. stop a leak: ``K`` on the lesion's last slice;
3. remove a region: ``X`` and Shift+click on the blob (3D);
4. per-stroke undo: two brush strokes (``D``), ``Ctrl+Z`` undoes the second;
5. paint on another plane: a brush stroke on the coronal view;
6. sphere brush: ``Shift+B`` and one click (shown in the multiplanar view);
7. intensity-limited paint: a stroke with the intensity range on;
8. clean-up and objects: save, remove islands (``Shift+I``) and smooth object 1, then
   outline mode (``T``) with each object's volume in the list;
9. fill between slices: a new object brushed on two axial slices with three empty slices
   between them, at another place on the second (the strokes do not overlap), saved
   (``Ctrl+S``), then ``I``; shown on the sagittal view through both strokes;
10. terminology: object 1 named from the SNOMED CT list (typed, then picked with the keyboard
    where the datalist takes it, else the value set as picking it does) and its code shown
    under the name. Chromium does not draw the datalist's popup headless, so the list itself
    is not in the shot; nor is Export's *SEG series description*, shown for DICOM uploads
    only (brain1 is NRRD; ``tests/web/test_tools.py`` exports a SEG with both from a CT).

Slicer itself is not run (it cannot be installed here): docs/web.md puts these next to what
Slicer's documentation says of its effects. Each PNG is the 1280x800 page scaled to 800x500 and
quantized to 128 colours (under ~150 KB):

    PYTHONPATH=src python benchmarks/segment_editor_shots.py --out docs/img
"""

from __future__ import annotations

import argparse
import gzip
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
from PIL import Image
from viewer_first_image import ARGS, CHROMIUM, _serve

from segloop.io import load_volume

__all__ = ["main"]

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pyradiomics"
WAIT_MS = 300_000  # a step in SwiftShader on a loaded 2-core machine


def js(page: Any, expr: str) -> Any:
    return page.evaluate(f"() => {expr}")


def shot(page: Any, out: Path, name: str) -> Path:
    """The page, scaled to 800x500 and quantized to 128 colours."""
    raw = out / f"{name}.raw.png"
    page.screenshot(path=str(raw))
    img = Image.open(raw).convert("RGB").resize((800, 500), Image.Resampling.LANCZOS)
    path = out / f"{name}.png"
    img.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    raw.unlink()
    print(f"{path} ({path.stat().st_size // 1024} KB)", flush=True)
    return path


def version(page: Any) -> int:
    return int(page.get_attribute("body", "data-version") or 0)


def next_version(page: Any, before: int, timeout_ms: int = WAIT_MS) -> bool:
    """Wait for a version after ``before``; False (and the page's message) when none came."""
    try:
        page.wait_for_function(f"() => Number(document.body.dataset.version) > {before}",
                               timeout=timeout_ms)
        return True
    except Exception:  # playwright's TimeoutError: an edit that changed nothing makes none
        print(f"  no new version: {page.locator('#message').inner_text()!r}", flush=True)
        return False


def click(page: Any, u: int, v: int, axis: int = 2, shift: bool = False) -> None:
    xy = js(page, f"window.segloop.voxelToClient({u}, {v}, {axis})")
    if shift:
        page.keyboard.down("Shift")
    page.mouse.click(*xy)
    if shift:
        page.keyboard.up("Shift")


def set_size(page: Any, n: int) -> None:
    """Type a brush size, then leave the field (keys go to the viewer again)."""
    page.fill("#pen-size", str(n))
    page.dispatch_event("#pen-size", "change")
    page.evaluate("() => document.activeElement.blur()")


def stroke(page: Any, a: tuple[int, int], b: tuple[int, int], axis: int = 2) -> None:
    pa = js(page, f"window.segloop.voxelToClient({a[0]}, {a[1]}, {axis})")
    pb = js(page, f"window.segloop.voxelToClient({b[0]}, {b[1]}, {axis})")
    page.mouse.move(*pa)
    page.mouse.down()
    page.mouse.move(*pb, steps=12)
    page.mouse.up()


def leaking_mask(truth: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """The lesion label with a run past its last slice, a separate blob and a stray square."""
    zs = np.flatnonzero(truth.any(axis=(0, 1)))
    top, z = int(zs.max()), int(np.argmax(truth.sum(axis=(0, 1))))
    cx, cy = (round(float(c)) for c in np.argwhere(truth[:, :, top]).mean(axis=0))
    m = truth.astype(np.uint8)
    x, y = np.mgrid[:m.shape[0], :m.shape[1]]
    for k in range(top + 1, min(top + 6, m.shape[2])):
        m[:, :, k][(x - cx) ** 2 + (y - cy) ** 2 <= 12 ** 2] = 1
    bx, by = cx + 45, cy - 40
    for k in range(z - 1, z + 2):
        m[:, :, k][((x - bx) ** 2 + (y - by) ** 2 <= 7 ** 2) & (truth[:, :, k] == 0)] = 1
    sx, sy, sz = cx - 40, cy + 30, int(zs.min()) + 1
    m[sx - 4:sx + 5, sy - 4:sy + 5, sz] = 1
    return m, {"top": top, "z": z, "c": (cx, cy), "blob": (bx, by, z)}


def fill_between(page: Any, out: Path, c: tuple[int, int], z0: int) -> None:
    """Step 9: a new object brushed on axial slices ``z0`` and ``z0 + 4`` around ``c``
    (x, y voxels), saved, then ``I``; the multiplanar view through a filled slice."""
    cx, cy = c
    n = len(js(page, "window.segloop.state.objects"))
    page.keyboard.press("a")  # the new object is the current one once listed
    page.wait_for_function(f"""() => {{ const s = window.segloop.state;
        return s.objects.length > {n} && s.currentObject === s.objects.at(-1).object_id; }}""")
    page.keyboard.press("d")
    set_size(page, 11)
    js(page, f"window.segloop.setSlice({z0}, 2)")
    stroke(page, (cx - 18, cy - 12), (cx + 12, cy - 12))
    js(page, f"window.segloop.setSlice({z0 + 4}, 2)")
    stroke(page, (cx - 8, cy + 8), (cx + 18, cy + 16))
    v = version(page)
    page.keyboard.press("Control+s")
    next_version(page, v)
    v = version(page)
    page.keyboard.press("i")
    if next_version(page, v, 60_000):
        page.wait_for_function("() => document.querySelector('#message').textContent"
                               ".startsWith('Filled between')")
        print(f"  {page.locator('#message').inner_text()}", flush=True)
    # sagittal through both strokes: slices z0 and z0 + 4 as brushed, the three between filled
    page.locator(f"#objects li[data-object-id='{n + 1}']").scroll_into_view_if_needed()
    js(page, f"window.segloop.setSlice({z0 + 2}, 2)")
    js(page, f"window.segloop.setSlice({cy}, 1)")
    page.keyboard.press("3")
    js(page, f"window.segloop.setSlice({cx}, 0)")
    time.sleep(1)
    shot(page, out, "9_fill_between")
    page.keyboard.press("1")


def terminology(page: Any, out: Path, z: int, structure: str = "Lesion") -> None:
    """Step 10: object 1 named ``structure`` from the SNOMED CT list; the object's row shows
    the code its DICOM-SEG segment gets; axial slice ``z`` shown."""
    js(page, f"window.segloop.setSlice({z}, 2)")
    page.wait_for_function("() => document.querySelectorAll('#structures option').length > 0",
                           timeout=WAIT_MS)
    name = page.locator("#objects li[data-object-id='1'] input[type=text]")
    name.click()
    name.press("Control+a")
    page.keyboard.type(structure[:4])
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    picked = name.input_value() == structure
    if not picked:  # the datalist's popup is not there headless: the value it would set
        name.fill(structure)
        name.press("Enter")
    print(f"  name {structure!r} {'picked with the keyboard' if picked else 'set'}", flush=True)
    page.wait_for_function(f"() => window.segloop.state.objects[0].name === {structure!r}",
                           timeout=WAIT_MS)
    page.wait_for_selector("#objects li[data-object-id='1'] .obj-code", timeout=WAIT_MS)
    page.click("#objects li[data-object-id='1'] .badge")  # selected: the page says its name
    page.wait_for_function("() => window.segloop.state.currentObject === 1")
    code = page.locator("#objects li[data-object-id='1'] .obj-code").inner_text()
    print(f"  code line: {code!r}", flush=True)
    shot(page, out, "10_terminology")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    src = DATA / "brain1_image.nrrd"
    lab = load_volume(DATA / "brain1_label.nrrd")
    truth = np.asarray(lab.source_to_canonical(np.asarray(lab.data) > 0))
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        server, url = _serve(t / "home")
        job = httpx.post(f"{url}/api/v1/jobs", files={"file": (src.name, src.read_bytes())},
                         timeout=120).json()["job_id"]
        vol: Any = nib.Nifti1Image.from_bytes(httpx.get(f"{url}/api/v1/jobs/{job}/volume",
                                                        timeout=120).content)
        mask, info = leaking_mask(truth)
        f = t / "brain1_lesion_leaking.nii.gz"
        f.write_bytes(gzip.compress(nib.Nifti1Image(mask, vol.affine).to_bytes()))
        cx, cy = info["c"]
        z, top = info["z"], info["top"]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{url}/#job={job}")
            page.wait_for_selector("body[data-version='0']", timeout=WAIT_MS)
            page.evaluate("document.querySelector('#edit-box').open = true")

            # 1. open a mask file onto the job
            page.set_input_files("#mask-input", str(f))
            next_version(page, 0)
            js(page, f"window.segloop.setSlice({top + 2})")
            shot(page, a.out, "1_open_mask_leaking")
            # 2. stop here on the lesion's last slice
            js(page, f"window.segloop.setSlice({top})")
            v = version(page)
            page.keyboard.press("k")
            next_version(page, v)
            js(page, f"window.segloop.setSlice({top + 2})")
            shot(page, a.out, "2_stop_here")
            # 3. remove the separate blob through the volume (Shift+click, remove-region tool)
            bx, by, bz = info["blob"]
            js(page, f"window.segloop.setSlice({bz})")
            v = version(page)
            page.keyboard.press("x")
            click(page, bx, by, shift=True)
            next_version(page, v)
            shot(page, a.out, "3_remove_region")
            # 4. two brush strokes of a second object, Ctrl+Z undoes the second
            page.keyboard.press("a")
            page.wait_for_function("() => window.segloop.state.currentObject === 2")
            page.keyboard.press("d")
            set_size(page, 5)
            stroke(page, (cx - 30, cy + 25), (cx + 30, cy + 25))
            stroke(page, (cx - 30, cy - 25), (cx + 30, cy - 25))
            page.keyboard.press("Control+z")
            page.wait_for_function("() => window.segloop.state.strokes.count === 1")
            shot(page, a.out, "4_stroke_undo")
            # 5. a brush stroke on the coronal plane
            page.keyboard.press("2")
            js(page, f"window.segloop.setSlice({cy}, 1)")
            stroke(page, (cx - 20, z + 3), (cx + 20, z + 3), axis=1)
            shot(page, a.out, "5_coronal_brush")
            page.keyboard.press("1")
            # 6. sphere brush: one click paints a ball through neighbouring slices
            page.keyboard.press("Shift+B")
            set_size(page, 16)
            js(page, f"window.segloop.setSlice({z})")
            click(page, cx + 35, cy + 35)
            page.keyboard.press("5")  # multiplanar: the ball on the coronal and sagittal tiles
            time.sleep(1)
            shot(page, a.out, "6_sphere_brush")
            page.keyboard.press("1")
            # 7. paint limited to an intensity range around the lesion's value
            val = js(page, f"window.segloop.nv.back.getValue({cx}, {cy}, {z})")
            page.check("#paint-range")
            page.fill("#paint-lo", str(val - 60))
            page.fill("#paint-hi", str(val + 60))
            page.evaluate("() => document.activeElement.blur()")
            page.keyboard.press("d")
            set_size(page, 9)
            stroke(page, (cx - 40, cy), (cx + 40, cy))
            shot(page, a.out, "7_paint_intensity_range")
            page.uncheck("#paint-range")
            # 8. save, remove islands, smooth; outline mode and volumes
            v = version(page)
            page.keyboard.press("Control+s")
            next_version(page, v)
            page.click("#objects li[data-object-id='1'] .badge")  # back to object 1
            page.wait_for_function("() => window.segloop.state.currentObject === 1")
            page.fill("#islands-min", "100")
            page.evaluate("() => document.activeElement.blur()")
            for action in (lambda: page.keyboard.press("Shift+I"),
                           lambda: page.click("#btn-smooth")):
                v = version(page)
                action()
                next_version(page, v, 60_000)
            page.keyboard.press("t")
            js(page, f"window.segloop.setSlice({z})")
            page.wait_for_selector("#objects li .measure", timeout=WAIT_MS)
            shot(page, a.out, "8_cleanup_outline_measures")
            page.keyboard.press("t")  # filled again
            fill_between(page, a.out, (cx + 95, cy), z - 6)
            terminology(page, a.out, z)
            browser.close()
        server.should_exit = True
    print(f"done in {time.monotonic() - t0:.0f} s; page errors: {errors}", flush=True)


if __name__ == "__main__":
    main()
