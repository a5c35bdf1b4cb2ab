"""Loading a volume without NiiVue's whole-volume loop and per-slice framebuffer checks (issue 15).

nvlean.js (4.) measures NiiVue's intensity range on the middle block it copies row by row,
instead of NiiVue's loop over every voxel, and (5.) asks the GPU process once per framebuffer
and texture whether it is complete, not after every slice of the gradient passes. Checked in
Chromium on the real CT and MR of ../shared/data:

* NiiVue's calMinMax only ever sees the middle block (it saw the whole volume before), and the
  robust and global ranges are NiiVue's own, computed again on the whole volume afterwards;
  the CT still opens with the page's soft-tissue window, the MR with NiiVue's robust range;
* opening a volume asks checkFramebufferStatus a handful of times, not twice per slice; the
  GL context has no error and the volume texture NiiVue rendered holds the image.
"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import LiveServer
from .test_planes import _upload
from .test_tools import OPEN_MS, js, need_data

#: every real checkFramebufferStatus call, counted before the page loads (the page's own
#: per-instance wrapper in nvlean.js calls this prototype method when it asks the GPU)
COUNT_CHECKS = """(() => {
  window.__checks = 0;
  const orig = WebGL2RenderingContext.prototype.checkFramebufferStatus;
  WebGL2RenderingContext.prototype.checkFramebufferStatus = function (target) {
    window.__checks += 1;
    return orig.call(this, target);
  };
})();"""

#: spy on NiiVue's calMinMax (the same module the page imported): the voxel count of each image
#: it measures; NiiVue's own range of the loaded volume, recomputed afterwards on a copy
SPY = """async () => {
  const cfg = await (await fetch('/web/config.json')).json();
  const NV = await import(cfg.niivue_url);
  const own = NV.NVImage.prototype.calMinMax;
  window.__own = own;
  window.__seen = [];
  NV.NVImage.prototype.calMinMax = function (...a) {
    window.__seen.push(this.img.length);
    return own.apply(this, a);
  };
}"""

OWN_RANGE = """() => {
  const v = window.segloop.nv.back;
  const copy = Object.assign(Object.create(Object.getPrototypeOf(v)), v);
  copy.hdr = Object.assign(Object.create(Object.getPrototypeOf(v.hdr)), v.hdr);
  copy.ignoreZeroVoxels = false; // as loaded (NiiVue may turn it on while measuring)
  window.__own.call(copy);
  const keys = ['robust_min', 'robust_max', 'global_min', 'global_max'];
  return { own: keys.map((k) => copy[k]), page: keys.map((k) => v[k]), cal: [v.cal_min, v.cal_max],
           nvox: v.img.length };
}"""


def _open(page: Any, url: str, job: str) -> None:
    page.evaluate(f"() => window.segloop.openJob('{job}')")
    page.wait_for_selector(f"body[data-job='{job}']", timeout=OPEN_MS)


@pytest.mark.parametrize("name", ["example_ct_sm.nii.gz", "example_mr_sm.nii.gz"])
def test_range_from_the_middle_block_is_niivues_own(server: LiveServer, page: Any, name: str
                                                    ) -> None:
    url = server.url
    job = _upload(url, need_data() / "totalseg" / name)
    page.goto(f"{url}/")
    page.wait_for_selector("body[data-ready='1']", timeout=OPEN_MS)
    page.evaluate(SPY)
    _open(page, url, job)
    got = page.evaluate(OWN_RANGE)
    seen = js(page, "window.__seen")
    nvox = got["nvox"]
    assert seen, "NiiVue's calMinMax was not called while the volume loaded"
    # NiiVue's middle block: half of each axis, about an eighth of the volume
    assert all(n <= nvox // 4 for n in seen), \
        f"calMinMax measured {seen} voxels, the volume has {nvox}: the whole-volume loop ran"
    assert got["page"] == pytest.approx(got["own"], rel=0, abs=1e-6), \
        f"range {got['page']} differs from NiiVue's own {got['own']}"
    if "ct" in name:
        assert got["cal"] == pytest.approx([-160.0, 240.0]), "the CT lost the page's window 400/40"
        assert js(page, "document.querySelector('#wl-preset').value") == "400,40"
    else:
        assert got["cal"] == pytest.approx(got["own"][:2]), "the MR is not shown with its robust range"
        assert js(page, "document.querySelector('#wl-preset').value") == "auto"


#: the volume texture NiiVue rendered (RGBA), its middle axial layer read back: distinct grey levels
VOLUME_LAYER = """() => {
  const nv = window.segloop.nv, gl = nv.gl;
  const [nx, ny, nz] = window.segloop.state.dims;
  const fb = gl.createFramebuffer();
  gl.bindFramebuffer(gl.FRAMEBUFFER, fb);
  gl.framebufferTextureLayer(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, nv.volumeTexture, 0, nz >> 1);
  const px = new Uint8Array(nx * ny * 4);
  gl.readPixels(0, 0, nx, ny, gl.RGBA, gl.UNSIGNED_BYTE, px);
  gl.bindFramebuffer(gl.FRAMEBUFFER, null);
  gl.deleteFramebuffer(fb);
  const levels = new Set();
  for (let i = 0; i < px.length; i += 4) levels.add(px[i]);
  return { levels: levels.size, error: gl.getError() };
}"""


def test_a_volume_opens_with_a_few_framebuffer_checks(server: LiveServer, page: Any) -> None:
    url = server.url
    job = _upload(url, need_data() / "totalseg" / "example_ct_sm.nii.gz")
    page.add_init_script(COUNT_CHECKS)
    page.goto(f"{url}/")
    page.wait_for_selector("body[data-ready='1']", timeout=OPEN_MS)
    before = js(page, "window.__checks")
    _open(page, url, job)
    checks = js(page, "window.__checks") - before
    nz = js(page, "window.segloop.state.dims[2]")
    assert nz > 20
    # NiiVue's gradient passes asked after every slice: 2 x nz on each volume upload
    assert checks <= 8, f"{checks} framebuffer checks for a volume of {nz} slices"
    assert js(page, "window.segloop.nv.gl.getError()") == 0
    layer = page.evaluate(VOLUME_LAYER)
    assert layer["error"] == 0
    assert layer["levels"] > 50, f"the rendered volume layer has {layer['levels']} grey levels"
