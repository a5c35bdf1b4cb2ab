"""What NiiVue computed for nothing is gone, and the drawing on the GPU is still exact (issue 15).

nvlean.js turns off NiiVue's gradient textures (the 2D views and segloop's matte 3D view never
read them), its whole-bitmap run-length encoding for drawUndo (segloop undoes strokes with
strokes.js), and uploads only the slices a pen stroke crossed. Checked in Chromium on a real CT
with real mouse strokes on axial, coronal and sagittal slices:

* no RGBA texture of the volume's size is made besides the volume's own (NiiVue made two more
  for its gradients on every volume upload);
* NiiVue keeps no undo bitmaps;
* the drawing texture the GPU samples equals the page's bitmap, voxel for voxel, after strokes
  on each plane, Ctrl+Z and a saved version (read back layer by layer through a framebuffer);
* the page compares only the slices a stroke crossed, and a sphere stroke is one step of
  Ctrl+Z like a brush stroke.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .conftest import LiveServer
from .test_planes import _client, _drag, _upload
from .test_tools import OPEN_MS, bitmap, js, need_data, set_size, wait_version

#: every texStorage3D call (format, width, height, depth), recorded before the page loads
RECORD = """(() => {
  window.__tex3d = [];
  const orig = WebGL2RenderingContext.prototype.texStorage3D;
  WebGL2RenderingContext.prototype.texStorage3D = function (target, levels, fmt, w, h, d) {
    window.__tex3d.push([fmt, w, h, d]);
    return orig.call(this, target, levels, fmt, w, h, d);
  };
})();"""

#: the drawing texture read back: one R8 layer at a time through a framebuffer, (X, Y, Z) order
READ_BACK = """(() => {
  const nv = window.segloop.nv, gl = nv.gl;
  const [nx, ny, nz] = window.segloop.state.dims;
  gl.finish();
  const fb = gl.createFramebuffer();
  gl.bindFramebuffer(gl.FRAMEBUFFER, fb);
  const out = new Uint8Array(nx * ny * nz);
  const px = new Uint8Array(nx * ny * 4);
  for (let z = 0; z < nz; z++) {
    gl.framebufferTextureLayer(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, nv.drawTexture, 0, z);
    gl.readPixels(0, 0, nx, ny, gl.RGBA, gl.UNSIGNED_BYTE, px);
    for (let i = 0; i < nx * ny; i++) out[z * nx * ny + i] = px[i * 4];
  }
  gl.bindFramebuffer(gl.FRAMEBUFFER, null);
  gl.deleteFramebuffer(fb);
  let s = '';
  for (let i = 0; i < out.length; i += 8192) s += String.fromCharCode(...out.subarray(i, i + 8192));
  return btoa(s);
})()"""


def _texture(page: Any) -> np.ndarray:
    import base64

    dims = js(page, "window.segloop.state.dims")
    raw = base64.b64decode(page.evaluate(f"() => {READ_BACK}"))
    return np.frombuffer(raw, np.uint8).reshape(dims, order="F")


def _same(page: Any) -> np.ndarray:
    bm = bitmap(page)
    tex = _texture(page)
    diff = np.argwhere(tex != bm)
    assert diff.size == 0, f"{len(diff)} voxels differ between the GPU and the bitmap, e.g. {diff[:3]}"
    return bm


def test_no_gradients_no_undo_bitmaps_and_the_gpu_drawing_is_exact(server: LiveServer, page: Any
                                                                   ) -> None:
    url = server.url
    job = _upload(url, need_data() / "totalseg" / "example_ct_sm.nii.gz")
    page.add_init_script(RECORD)
    page.goto(f"{url}/#job={job}")
    wait_version(page, 0, OPEN_MS)
    nx, ny, nz = js(page, "window.segloop.state.dims")
    rgba8 = 0x8058  # gl.RGBA8
    big = [t for t in js(page, "window.__tex3d") if t[0] == rgba8 and t[1:] == [nx, ny, nz]]
    assert len(big) == 1, f"RGBA8 textures of the volume's size: {big} (only the volume's own)"

    set_size(page, 3)
    page.keyboard.press("d")
    # axial slice z: one stroke across it
    z = nz // 2
    js(page, f"window.segloop.setSlice({z}, 2)")
    _drag(page, _client(page, 20, ny // 2, 2), _client(page, 80, ny // 2 + 10, 2))
    one = _same(page)
    assert (one[:, :, z] == 1).sum() > 40 and not np.delete(one, z, axis=2).any()
    # coronal slice y, then sagittal slice x (views 2 and 3)
    page.keyboard.press("2")
    y = ny // 3
    js(page, f"window.segloop.setSlice({y}, 1)")
    _drag(page, _client(page, 30, nz // 4, 1), _client(page, 90, nz // 2, 1))
    two = _same(page)
    assert (two[:, y, :] != one[:, y, :]).sum() > 20
    page.keyboard.press("3")
    x = nx // 2 + 5
    js(page, f"window.segloop.setSlice({x}, 0)")
    _drag(page, _client(page, 15, nz // 3, 0), _client(page, 70, 2 * nz // 3, 0))
    three = _same(page)
    assert (three[x] != two[x]).sum() > 20
    assert not np.delete(three != two, x, axis=0).any(), "the sagittal stroke left its slice"
    assert js(page, "window.segloop.nv.drawUndoBitmaps.filter((b) => b && b.length).length") == 0

    page.keyboard.press("Control+z")  # segloop's per-stroke undo: the sagittal stroke goes
    page.wait_for_function("() => window.segloop.state.strokes.count === 2")
    assert np.array_equal(_same(page), two)
    page.keyboard.press("Control+s")
    wait_version(page, 1)
    assert np.array_equal(_same(page), two)

    # a brush stroke, then a sphere stroke: Ctrl+Z takes back the sphere only (it was never
    # recorded as a stroke, so Ctrl+Z took back the brush stroke and left the ball)
    page.keyboard.press("1")
    js(page, f"window.segloop.setSlice({z + 2}, 2)")
    page.keyboard.press("d")
    _drag(page, _client(page, 20, ny // 3, 2), _client(page, 60, ny // 3, 2))
    brushed = _same(page)
    assert (brushed != two).sum() > 20
    page.keyboard.press("Shift+B")
    c = _client(page, 90, 2 * ny // 3, 2)
    page.mouse.click(*c)
    ball = _same(page)
    assert (ball != brushed).sum() > 5 and len(np.unique(np.argwhere(ball != brushed)[:, 2])) > 1
    page.keyboard.press("Control+z")
    page.wait_for_function("() => window.segloop.state.strokes.count === 1")
    assert np.array_equal(_same(page), brushed)
    assert page.errors == []
