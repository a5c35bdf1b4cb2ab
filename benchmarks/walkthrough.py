"""A timed annotator's walkthrough in the viewer: box a brain MR lesion, propagate, fix the leak.

Issue 15's check: "a brain MR lesion whose propagation leaks must be fixable in under a
minute". Everything goes through the page in headless Chromium (Debian's ``/usr/bin/chromium``,
SwiftShader WebGL) with real mouse and keyboard events, against a real in-process segloop
server (classic engine unless ``--engine``):

1. open: the image is uploaded through the page's file input;
2. go to the lesion's largest slice with the arrow keys, ``B`` and a box dragged around the
   lesion (the label's bounding box plus ``--margin`` voxels, as a loose hand-drawn box);
3. ``S`` segment, ``G`` propagate;
4. review: the wheel over the canvas through every slice the mask or the lesion touches;
5. fix, with the editing tools only: ``K`` *Stop here* on the lesion's first and last slice
   when the mask runs on beyond them (``U`` / ``Shift+U`` *clear from here* on the next slice
   when that end is the box's own slice), then ``X`` + click on every 2D region of the mask that
   does not touch the lesion (largest first, at most ``--max-clicks``), then
6. ``Ctrl+S`` and ``Shift+D`` (the mask downloaded as NIfTI).

The walkthrough knows where the lesion is from the reference label (that stands in for the
annotator's eyes: which slices are wrong and where to click); it never edits the mask itself.
Printed: seconds per step, the fix's total (steps 5-6, the issue's "under a minute"), the Dice
against the label after the propagation and after the fix, and the voxels of the mask outside
the lesion that no click could remove (a leak joined to the lesion needs the eraser).
Screenshots go to ``--shots`` (outside the repository).

    PYTHONPATH=src python benchmarks/walkthrough.py \\
        --image /work/scratch-viewer/devdata/pyradiomics/brain2_image.nrrd \\
        --label /work/scratch-viewer/devdata/pyradiomics/brain2_label.nrrd \\
        --shots /work/scratch-viewer/walkthrough
"""

from __future__ import annotations

import argparse
import gzip
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
from scipy import ndimage as ndi
from viewer_first_image import ARGS, CHROMIUM, _serve

from segloop.io import load_volume

__all__ = ["main"]

WAIT_MS = 600_000  # a step in SwiftShader on a loaded 2-core machine


class Steps:
    """Wall seconds per named step, printed as they end."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        self.seconds[name] = time.perf_counter() - t0
        print(f"  {name:34s} {self.seconds[name]:6.1f} s", flush=True)
        return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def js(page: Any, expr: str) -> Any:
    return page.evaluate(f"() => {expr}")


def mask(url: str, job: str) -> np.ndarray:
    """The current version's label map on the canonical grid, (X, Y, Z)."""
    r = httpx.get(f"{url}/api/v1/jobs/{job}/result", params={"grid": "canonical"}, timeout=60)
    r.raise_for_status()
    img: Any = nib.Nifti1Image.from_bytes(gzip.decompress(r.content))
    return np.asarray(img.dataobj)


def wait_version(page: Any, n: int) -> None:
    page.wait_for_selector(f"body[data-version='{n}']", timeout=WAIT_MS)


def version(page: Any) -> int:
    return int(page.get_attribute("body", "data-version") or 0)


def go_to_slice(page: Any, z: int) -> None:
    """Arrow keys until the axial slice shown is ``z`` (ArrowUp: next slice)."""
    now = js(page, "window.segloop.currentVox()")[2]
    key = "ArrowUp" if z > now else "ArrowDown"
    for _ in range(abs(z - now)):
        page.keyboard.press(key)
    got = js(page, "window.segloop.currentVox()")[2]
    assert got == z, f"slice {got} shown, wanted {z}"


def click_voxel(page: Any, x: int, y: int) -> None:
    p = js(page, f"window.segloop.voxelToClient({x}, {y})")
    page.mouse.click(p[0], p[1])


def edit_step(page: Any, action: Callable[[], None]) -> None:
    """Do ``action`` (a key or a click that stores a new version) and wait for that version."""
    n = version(page)
    action()
    page.wait_for_function(
        f"() => Number(document.body.dataset.version) > {n} || "
        "/nothing to change|failed|error/i.test(document.querySelector('#message').textContent)",
        timeout=WAIT_MS)
    if version(page) == n:
        print(f"    (no new version: {page.locator('#message').inner_text()!r})", flush=True)


def key_edit(page: Any, z: int, key: str) -> None:
    """Go to slice z and press ``key`` (an edit that stores a new version)."""
    go_to_slice(page, z)
    edit_step(page, lambda: page.keyboard.press(key))


def stray_regions(m: np.ndarray, truth: np.ndarray, lo: int, hi: int) -> list[tuple[int, int, int, int]]:
    """2D regions (face connectivity) of ``m`` on slices lo..hi that do not touch the lesion,
    largest first: (voxels, x, y, z) with (x, y, z) a voxel of the region."""
    out = []
    for z in range(lo, hi + 1):
        lab, n = ndi.label(m[:, :, z])
        for k in range(1, n + 1):
            reg = lab == k
            if (reg & truth[:, :, z]).any():
                continue
            xs, ys = np.nonzero(reg)
            i = len(xs) // 2
            out.append((int(reg.sum()), int(xs[i]), int(ys[i]), z))
    return sorted(out, reverse=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image", type=Path, required=True)
    ap.add_argument("--label", type=Path, required=True)
    ap.add_argument("--value", type=int, default=0, help="the lesion's label value (0: any)")
    ap.add_argument("--engine", default="", help="engine name (the server's default: classic)")
    ap.add_argument("--margin", type=int, default=3, help="voxels around the lesion's box")
    ap.add_argument("--max-clicks", type=int, default=8)
    ap.add_argument("--shots", type=Path, default=Path("/tmp/segloop-walkthrough"))
    a = ap.parse_args()
    a.shots.mkdir(parents=True, exist_ok=True)
    lab = load_volume(a.label)
    raw = np.asarray(lab.data)
    truth = np.asarray(lab.source_to_canonical(raw == a.value if a.value else raw > 0)).astype(bool)
    zs = np.flatnonzero(truth.any(axis=(0, 1)))
    z0, zmin, zmax = int(np.argmax(truth.sum(axis=(0, 1)))), int(zs.min()), int(zs.max())
    xs, ys = np.nonzero(truth[:, :, z0])
    box = [int(xs.min()) - a.margin, int(ys.min()) - a.margin,
           int(xs.max()) + a.margin, int(ys.max()) + a.margin]
    from playwright.sync_api import sync_playwright

    steps = Steps()
    with tempfile.TemporaryDirectory() as tmp:
        server, url = _serve(Path(tmp) / "home")
        print(f"load average {os.getloadavg()[0]:.1f} (2-core machine shared with others); "
              f"{a.image.name}: lesion on slices {zmin}-{zmax} ({int(truth.sum())} voxels), "
              f"box {box} on slice {z0}", flush=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            ctx = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
            page = ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/")
            page.wait_for_selector("body[data-ready='1']", timeout=WAIT_MS)
            if a.engine:
                page.select_option("#engine", a.engine)

            def open_image() -> str:
                page.set_input_files("#file-input", str(a.image))
                page.wait_for_selector("body[data-job][data-version='0']", timeout=WAIT_MS)
                return str(page.get_attribute("body", "data-job"))

            job = steps.run("1 open (upload in the page)", open_image)
            page.mouse.move(*js(page, "window.segloop.voxelToClient(5, 5)"))

            def prompt() -> None:
                go_to_slice(page, z0)
                page.keyboard.press("b")
                pa = js(page, f"window.segloop.voxelToClient({box[0]}, {box[1]})")
                pb = js(page, f"window.segloop.voxelToClient({box[2]}, {box[3]})")
                page.mouse.move(*pa)
                page.mouse.down()
                page.mouse.move(*pb, steps=6)
                page.mouse.up()

            steps.run("2 go to the slice, draw a box", prompt)
            steps.run("3a segment (S)", lambda: edit_step(page, lambda: page.keyboard.press("s")))
            steps.run("3b propagate (G)", lambda: edit_step(page, lambda: page.keyboard.press("g")))
            before = mask(url, job) > 0
            d0 = dice(before, truth)
            mz = np.flatnonzero(before.any(axis=(0, 1)))
            lo = int(min(mz.min(), zmin)) if mz.size else zmin
            hi = int(max(mz.max(), zmax)) if mz.size else zmax

            def review() -> None:
                page.keyboard.press("n")
                go_to_slice(page, lo)
                c = js(page, "window.segloop.voxelToClient(128, 128)")
                page.mouse.move(*c)
                for _ in range(hi - lo):
                    page.mouse.wheel(0, -100)  # wheel up: the next slice
                    page.wait_for_timeout(50)

            steps.run(f"4 review slices {lo}-{hi} (wheel)", review)
            leak_z = next((z for z in range(hi, zmax, -1) if before[:, :, z].any()), z0)
            go_to_slice(page, leak_z)
            page.screenshot(path=str(a.shots / "1_after_propagation.png"))
            t_fix = time.perf_counter()
            # a run-on beyond the lesion's last slice: Stop here (K) on that slice, which clears
            # the side away from the box's slice; on the box's slice itself that side is not
            # defined, so clear from the next slice on instead (U up, Shift+U down)
            if mz.size and mz.max() > zmax:
                z, key = (zmax, "k") if zmax > z0 else (zmax + 1, "u")
                steps.run(f"5a {'stop here (K)' if key == 'k' else 'clear up (U)'} on slice {z}",
                          lambda z=z, key=key: key_edit(page, z, key))
            if mz.size and mz.min() < zmin:
                z, key = (zmin, "k") if zmin < z0 else (zmin - 1, "Shift+U")
                steps.run(f"5b {'stop here (K)' if key == 'k' else 'clear down (Shift+U)'} on "
                          f"slice {z}", lambda z=z, key=key: key_edit(page, z, key))
            now = mask(url, job) > 0
            page.keyboard.press("x")
            clicks = 0
            for vox, x, y, z in stray_regions(now, truth, zmin, zmax)[:a.max_clicks]:
                steps.run(f"5c remove region ({vox} vox, slice {z})",
                          lambda x=x, y=y, z=z: (go_to_slice(page, z),
                                                 edit_step(page, lambda: click_voxel(page, x, y))))
                clicks += 1

            def save() -> None:
                page.keyboard.press("Control+s")
                with page.expect_download(timeout=WAIT_MS) as dl:
                    page.keyboard.press("Shift+D")
                dl.value.save_as(a.shots / "mask.nii.gz")

            steps.run("6 save (Ctrl+S), download (Shift+D)", save)
            fix_s = time.perf_counter() - t_fix
            after = mask(url, job) > 0
            go_to_slice(page, z0)
            page.screenshot(path=str(a.shots / "2_fixed.png"))
            left = int((after & ~truth).sum())
            print(f"fix (steps 5-6): {fix_s:.1f} s, {clicks} region clicks; Dice after propagation "
                  f"{d0:.3f} ({int((before & ~truth).sum())} voxels outside the lesion), after the "
                  f"fix {dice(after, truth):.3f} ({left} outside); page errors {len(errors)}",
                  flush=True)
            total = sum(steps.seconds.values())
            print(f"walkthrough total {total:.1f} s; screenshots in {a.shots}", flush=True)
            browser.close()
        server.should_exit = True


if __name__ == "__main__":
    main()
