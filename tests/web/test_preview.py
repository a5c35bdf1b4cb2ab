"""The first image of a large volume is its raw ``preview.nii``, in a real Chromium (issue 15).

A volume over 8 Mi voxels (the shared CT, every voxel repeated 3 times along each axis: 366 x
303 x 90) gets an uncompressed ``preview.nii`` at ingest; the page shows it first, then the
full volume. Checked: the server holds ``preview.nii`` and no ``.nii.gz``, serves it as raw
bytes, and when the page marks ``segloop:first-image`` NiiVue holds the preview itself: its
grid, its voxel values (those of the file on the server) and the CT window; the full volume
replaces it afterwards.

Guard: passes on the code before this test too (the raw preview came with 04e5ce1's parent);
it fails on a page that does not show the preview or cannot parse a raw one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np

from segloop.jobs import files

from .conftest import LiveServer
from .test_planes import _upload
from .test_tools import OPEN_MS, need_data

#: at segloop:first-image, what NiiVue holds: grid, window, and every 997th voxel value
AT_FIRST_IMAGE = """(() => {
  const mark = performance.mark.bind(performance);
  performance.mark = (name, ...rest) => {
    const nv = window.segloop && window.segloop.nv;
    if (name === 'segloop:first-image' && nv && nv.back) {
      const v = nv.back, n = v.img.length, sample = [];
      for (let i = 0; i < n; i += 997) sample.push(Number(v.img[i]));
      window.__first = { dims: Array.from(v.hdr.dims.slice(1, 4)), volumes: nv.volumes.length,
                         cal: [v.cal_min, v.cal_max], n, sample };
    }
    return mark(name, ...rest);
  };
})();"""


def _large_ct(tmp_path: Path) -> Path:
    """The shared CT upsampled x3 along each axis (nearest), on the same physical extent."""
    img: Any = nib.load(str(need_data() / "totalseg/example_ct_sm.nii.gz"))
    data = np.asarray(img.dataobj)
    big = data.repeat(3, axis=0).repeat(3, axis=1).repeat(3, axis=2)
    assert big.size > files.PREVIEW_MIN_VOXELS
    aff = np.asarray(img.affine, np.float64) @ np.diag([1 / 3, 1 / 3, 1 / 3, 1.0])
    out = tmp_path / "ct_x3.nii.gz"
    nib.save(nib.Nifti1Image(big, aff), str(out))
    return out


def test_the_first_image_is_the_raw_preview(server: LiveServer, browser: Any,
                                            tmp_path: Path) -> None:
    url = server.url
    job = _upload(url, _large_ct(tmp_path))
    jd = server.settings.home / "jobs" / job
    assert (jd / "preview.nii").is_file() and not (jd / "preview.nii.gz").exists()
    prev: Any = nib.load(str(jd / "preview.nii"))
    want = np.asarray(prev.dataobj).ravel(order="F")
    full_shape = httpx.get(f"{url}/api/v1/jobs/{job}", timeout=30).json()["shape"]

    ctx = browser.new_context(viewport={"width": 1180, "height": 740})
    ctx.add_init_script(AT_FIRST_IMAGE)
    page = ctx.new_page()
    served: list[tuple[str, str]] = []
    page.on("response", lambda r: served.append((r.url, r.headers.get("content-type", ""))))
    try:
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready='1']", timeout=OPEN_MS)
        page.evaluate(f"() => window.segloop.openJob('{job}')")
        page.wait_for_selector(f"body[data-job='{job}']", timeout=OPEN_MS)
        first = page.evaluate("() => window.__first")
        full = page.evaluate("() => Array.from(window.segloop.nv.back.hdr.dims.slice(1, 4))")
    finally:
        ctx.close()

    assert [ct for u, ct in served if u.endswith("/volume?preview=true")] == \
        ["application/octet-stream"], served
    assert first is not None, "the page never marked segloop:first-image with a volume loaded"
    assert first["volumes"] == 1
    assert first["dims"] == list(prev.shape) and first["n"] == want.size
    assert first["sample"] == want[::997].tolist()  # NiiVue parsed the raw file's voxels
    assert first["cal"] == [-160, 240]  # the CT soft-tissue window (400/40) from the first image
    assert full == full_shape  # then the full volume replaced the preview
