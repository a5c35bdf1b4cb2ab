"""How soon the viewer shows the first image after an upload, in a real headless Chromium.

Run from the checkout (needs ``npm ci`` and Debian's ``/usr/bin/chromium``):

    PYTHONPATH=src python benchmarks/viewer_first_image.py [--shape 512,512,300] [--repeat 1] \
        [--only ct|dicom] [--preview-only] [--no-settle] [--limit S] [--phases] [--cpu-profile]

Two uploads through the page's file input, each opened with the low-resolution preview first
(the default) and without it (``?preview=0``), side by side against one in-process server:

* a synthetic CT of ``--shape`` (int16 phantom with noise, gzip NIfTI in a temp folder);
* the 20-slice DICOM series ``../shared/data/totalseg/example_ct_dicom`` zipped.

The page marks (``performance.mark``) when the upload's bytes are sent (``upload-sent``), when
the server answered with the job (``job-created``), when the first image is on screen
(``first-image``: the preview, or the full volume without one) and when the full volume is
ready to edit (``full-image``). Printed: seconds from ``upload-sent`` to each, and the ratio.
WebGL2 runs on SwiftShader (CPU); on a loaded machine say so with the figures.

WebGL calls only queue work: the page's marks fire when NiiVue has *queued* an image, which
SwiftShader may draw seconds later. So by default (``--settle``, off with ``--no-settle``) every
``segloop:`` mark is taken after the GPU has done all queued work, i.e. when the pixels exist:
after reading one pixel back (``gl.readPixels`` waits for the GPU process). Not ``gl.finish()``:
Chromium's WebGL ``finish()`` is only a flush, it returns before the work is done. The benchmark
installs that in the page itself, so it times any version of the viewer the same way: run it
with ``PYTHONPATH`` pointing at another checkout's ``src`` to compare (that checkout serves its
own static files).
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader", "--no-first-run", "--disable-background-networking"]
DICOM = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "totalseg" / \
    "example_ct_dicom"
MARKS = ("job-created", "first-image", "full-image")
SHOWN = (*MARKS, "first-stroke")
PREVIEW_MIN_VOXELS = 8 << 20  # segloop.jobs.files.PREVIEW_MIN_VOXELS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _phantom(shape: tuple[int, int, int], path: Path) -> Path:
    """An int16 CT-like volume: air, a body ellipse of soft tissue, bright bone, noise."""
    rng = np.random.default_rng(0)
    x, y = np.mgrid[:shape[0], :shape[1]]
    body = ((x - shape[0] / 2) / (shape[0] * 0.4)) ** 2 + ((y - shape[1] / 2) / (shape[1] * 0.3)) ** 2
    sl = np.where(body < 1, 40, -1000).astype(np.int16)
    sl[(body < 0.05)] = 700
    vol = np.repeat(sl[:, :, None], shape[2], axis=2)
    vol += rng.normal(0, 12, vol.shape).astype(np.int16)
    aff = np.diag([0.8, 0.8, 1.5, 1.0])
    nib.save(nib.Nifti1Image(vol, aff), str(path))
    return path


def _dicom_zip(dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for f in sorted(DICOM.iterdir()):
            zf.write(f, f.name)
    return dest


def _serve(home: Path) -> tuple[Any, str]:
    import uvicorn

    from segloop.api import create_app
    from segloop.config import load_settings
    from segloop.web import mount

    settings = load_settings(None, home=home, json_logs=False, default_engine="classic")
    app = create_app(settings)
    mount(app, settings)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


#: wait until the GPU process has done all work queued on `gl`: one pixel of the canvas read
#: back (Chromium's WebGL finish() is only a flush); the bound framebuffer is left as it was
DRAIN = """window.__drain = (gl) => {
  const fb = gl.getParameter(gl.FRAMEBUFFER_BINDING);
  gl.bindFramebuffer(gl.FRAMEBUFFER, null);
  gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array(4));
  gl.bindFramebuffer(gl.FRAMEBUFFER, fb);
};"""

#: every segloop mark once the GPU (SwiftShader) has drawn what was queued
SETTLE = DRAIN + """(() => {
  const mark = performance.mark.bind(performance);
  performance.mark = (name, ...rest) => {
    const nv = window.segloop && window.segloop.nv;
    if (String(name).startsWith('segloop:') && nv && nv.gl) window.__drain(nv.gl);
    return mark(name, ...rest);
  };
})();"""


#: --phases: time NiiVue's costly methods (inclusive ms, the GPU drained before returning, so
#: the GPU work a call queued is counted in it); results in window.__phases
PHASES = DRAIN + """(() => {
  const names = ['loadFromArrayBuffer', 'updateGLVolume', 'refreshLayers', 'createEmptyDrawing',
    'closeDrawing', 'drawAddUndoBitmap', 'drawClearAllUndoBitmaps', 'refreshDrawing', 'drawScene',
    'refreshColormaps', 'setDrawingEnabled', 'removeVolumeByIndex', 'setPan2Dxyzmm', 'setSliceType',
    'calculateMinMaxVoxIdx'];
  window.__phases = {};
  const wrap = (nv) => {
    for (const n of names) {
      const f = nv[n];
      if (typeof f !== 'function') continue;
      nv[n] = function (...args) {
        const t0 = performance.now();
        const done = (r) => {
          if (nv.gl) window.__drain(nv.gl);
          const p = (window.__phases[n] = window.__phases[n] || { calls: 0, ms: 0 });
          p.calls += 1;
          p.ms += performance.now() - t0;
          return r;
        };
        const r = f.apply(this, args);
        return r && typeof r.then === 'function' ? r.then(done) : done(r);
      };
    }
  };
  const poll = setInterval(() => {
    const nv = window.segloop && window.segloop.nv;
    if (nv) { clearInterval(poll); wrap(nv); }
  }, 5);
})();"""


def _print_profile(profile: dict[str, Any], top: int = 18) -> None:
    """Self seconds per function of a CDP CPU profile (the page's main thread), largest first."""
    nodes = {n["id"]: n for n in profile["nodes"]}
    self_us: dict[str, float] = {}
    for node_id, dt in zip(profile["samples"], profile["timeDeltas"], strict=True):
        f = nodes[node_id]["callFrame"]
        where = f"{f['functionName'] or '(anonymous)'} {Path(f['url']).name}:{f['lineNumber'] + 1}"
        self_us[where] = self_us.get(where, 0.0) + dt
    total = sum(self_us.values())
    print(f"    CPU profile of the page: {total / 1e6:.1f} s sampled", flush=True)
    for where, us in sorted(self_us.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {us / 1e6:7.2f} s  {where}", flush=True)


def _stroke(page: Any) -> float:
    """Seconds of one brush stroke (press D, 8 mouse moves across the middle of the axial slice,
    release) until the page has recorded it (an unsaved stroke) and the GPU has drawn it."""
    page.keyboard.press("d")
    nx, ny = page.evaluate("() => window.segloop.state.dims.slice(0, 2)")
    a = page.evaluate(f"() => window.segloop.voxelToClient({nx // 3}, {ny // 2})")
    b = page.evaluate(f"() => window.segloop.voxelToClient({2 * nx // 3}, {ny // 2})")
    t0 = time.perf_counter()
    page.mouse.move(*a)
    page.mouse.down()
    for i in range(1, 9):
        page.mouse.move(a[0] + (b[0] - a[0]) * i / 8, a[1] + (b[1] - a[1]) * i / 8)
    page.mouse.up()
    page.wait_for_function("() => window.segloop.state.dirty && window.segloop.state.strokes.count >= 1",
                           timeout=300_000, polling=20)
    page.evaluate(f"() => {{ {DRAIN} window.__drain(window.segloop.nv.gl); }}")
    return time.perf_counter() - t0


def _one(browser: Any, url: str, path: Path, preview: bool, limit_s: float,
         settle: bool = True, phases: bool = False, cpu_profile: bool = False) -> dict[str, float]:
    """Seconds from upload-sent to each mark (a mark not reached within ``limit_s`` of the
    previous one is missing from the result)."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    if settle:
        ctx.add_init_script(SETTLE)
    if phases:
        ctx.add_init_script(PHASES)
    page = ctx.new_page()
    try:
        page.goto(url + ("/" if preview else "/?preview=0"))
        page.wait_for_selector("body[data-ready='1']", timeout=60_000)
        cdp = None
        if cpu_profile:
            cdp = ctx.new_cdp_session(page)
            cdp.send("Profiler.enable")
            cdp.send("Profiler.setSamplingInterval", {"interval": 2000})
            cdp.send("Profiler.start")
        page.set_input_files("#file-input", str(path))
        for mark in MARKS:
            try:
                page.wait_for_function(
                    f"() => performance.getEntriesByName('segloop:{mark}').length > 0",
                    timeout=limit_s * 1000, polling=50)
            except Exception:  # playwright's TimeoutError: report what was reached
                break
        stroke = _stroke(page) if page.evaluate(
            "() => performance.getEntriesByName('segloop:full-image').length > 0") else None
        got = page.evaluate(
            """() => Object.fromEntries(['upload-sent', 'job-created', 'first-image', 'full-image']
                 .map((n) => [n, (performance.getEntriesByName('segloop:' + n)[0] || {}).startTime]))""")
        t0 = got["upload-sent"]
        if cdp is not None:
            _print_profile(cdp.send("Profiler.stop")["profile"])
        if phases:
            steps = page.evaluate(
                """() => performance.getEntriesByType('mark')
                     .filter((m) => m.name.startsWith('segloop:'))
                     .map((m) => [m.name.slice(8), m.startTime])""")
            prev = t0
            for name, at in sorted(steps, key=lambda s: s[1]):
                print(f"    mark {name:20s} {(at - t0) / 1000:7.2f} s  (+{(at - prev) / 1000:6.2f} s)",
                      flush=True)
                prev = at
            for r in page.evaluate(
                """() => performance.getEntriesByType('resource')
                     .filter((r) => r.name.includes('/api/'))
                     .map((r) => [r.name.replace(/^.*\\/api\\/v1\\//, ''), r.startTime,
                                  r.requestStart, r.responseStart, r.responseEnd])"""):
                if r[4] < t0:
                    continue
                rel = [(v - t0) / 1000 if v else float("nan") for v in r[1:]]
                print(f"    http {r[0][:60]:60s} start {rel[0]:6.2f} sent {rel[1]:6.2f} "
                      f"first byte {rel[2]:6.2f} end {rel[3]:6.2f} s", flush=True)
            for name, p in sorted(page.evaluate("() => window.__phases").items(),
                                  key=lambda kv: -kv[1]["ms"]):
                print(f"    {name:26s} {p['calls']:4d} calls {p['ms'] / 1000:7.2f} s", flush=True)
        out = {k: (got[k] - t0) / 1000 for k in MARKS if got.get(k) is not None}
        if stroke is not None:
            out["first-stroke"] = stroke
        return out
    finally:
        ctx.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="512,512,300")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--limit", type=float, default=240.0,
                    help="seconds to wait for each mark (the full volume in SwiftShader on a "
                         "loaded machine can take many minutes)")
    ap.add_argument("--settle", action=argparse.BooleanOptionalAction, default=True,
                    help="take each mark once the GPU has done the work queued (pixels drawn, "
                         "not just queued)")
    ap.add_argument("--only", choices=("ct", "dicom"), default=None, help="one of the two uploads")
    ap.add_argument("--preview-only", action="store_true",
                    help="skip the run without the preview (the full CT in SwiftShader needs GBs)")
    ap.add_argument("--phases", action="store_true",
                    help="print every segloop: mark of the page (the steps from the upload to "
                         "editing) and the seconds spent in NiiVue's costly methods (inclusive, "
                         "GPU work finished in each; nested calls count in both)")
    ap.add_argument("--cpu-profile", action="store_true",
                    help="print the page's CPU profile (self seconds per function, CDP Profiler)")
    a = ap.parse_args()
    shape = tuple(int(v) for v in a.shape.split(","))
    assert len(shape) == 3
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        big = int(np.prod(shape)) > PREVIEW_MIN_VOXELS
        cases = [] if a.only == "dicom" else [
            (f"CT {shape[0]}x{shape[1]}x{shape[2]} NIfTI", _phantom(shape, t / "ct.nii.gz"), big)]
        if DICOM.is_dir() and a.only != "ct":  # 512x512x20: under the preview threshold
            cases.append((f"DICOM zip, {len(list(DICOM.iterdir()))} slices",
                          _dicom_zip(t / "series.zip"), False))
        server, url = _serve(t / "home")
        import segloop

        print(f"load average {os.getloadavg()[0]:.1f} (2-core machine shared with others); "
              f"segloop from {Path(segloop.__file__).parents[1]}; marks "
              f"{'with the GPU drained' if a.settle else 'as queued'}", flush=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for name, path, has_preview in cases:
                mb = path.stat().st_size / 2**20
                for r in range(a.repeat):
                    res = {pv: _one(browser, url, path, pv, a.limit, a.settle, a.phases,
                                a.cpu_profile)
                           for pv in ((True,) if a.preview_only else (True, False))}
                    for pv, m in res.items():
                        shown = "  ".join(f"{k} {m[k]:6.2f} s" if k in m else
                                          f"{k} > {a.limit:.0f} s after the previous" for k in SHOWN)
                        print(f"{name} ({mb:.0f} MiB), {'preview first' if pv else 'no preview  '}"
                              f" [{r + 1}]: {shown}", flush=True)
                    if a.preview_only:
                        continue
                    if not has_preview:
                        print("  (no preview: the volume is under 8 Mi voxels, both runs take "
                              "the same path)", flush=True)
                    elif "first-image" in res[False] and "first-image" in res[True]:
                        ratio = res[False]["first-image"] / max(res[True]["first-image"], 1e-6)
                        print(f"  first image: {ratio:.1f}x sooner with the preview", flush=True)
            browser.close()
        server.should_exit = True


if __name__ == "__main__":
    main()
