"""The real OHIF viewer (the MONAI Label build shipped in the monailabel==0.8.5 wheel) in headless
Chromium, with a real Orthanc as its DICOMweb source and `segloop serve` as its MONAI Label
server: the study list comes from Orthanc, the series opens (its JPEG 2000 frames fetched
through the page's ``/proxy/dicom/`` as OHIF's build expects), the MONAI Label panel
connects to segloop (``GET /monailabel/info/`` across origins: CORS), and a Point Prompts
inference runs from the page: two clicks on the liver of the axial viewport, *Run*, segloop
answers ``POST /monailabel/infer/classic`` and OHIF paints the label it returned.

No sleeps and no page coordinates: controls are found by their text or title, every step
waits on the state it needs (the viewport's volume loaded, the probe tool active, each click
recorded as a probe annotation, the infer's HTTP response, the labelmap filled), and the
click positions come from the liver's ground truth in world coordinates mapped to the axial
viewport's canvas by cornerstone (``viewport.worldToCanvas``) plus the element's box."""

from __future__ import annotations

import http.server
import json
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from realdata import SHARED_DATA, need_shared_data

from .conftest import Server, free_port
from .test_dicomweb import orthanc  # noqa: F401 - the fixture

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
SERIES = SHARED_DATA / "totalseg" / "example_ct_dicom"
LIVER = SHARED_DATA / "totalseg" / "example_seg_dicom.nii.gz"  # label 5 on the series' grid

# the axial viewport (view-plane normal along z) once its volume is loaded: id, focal point
AXIAL_JS = """() => {
  const cs = window.cornerstone;
  if (!cs) return null;
  for (const e of cs.getEnabledElements()) {
    const vp = e.viewport, cam = vp.getCamera(), n = cam.viewPlaneNormal;
    if (!n || Math.abs(n[2]) < 0.99 || !vp.getImageData || !vp.getImageData()) continue;
    return {id: vp.id, focal: Array.from(cam.focalPoint)};
  }
  return null;
}"""
# a world point (LPS, mm) -> page coordinates: the viewport's canvas point + its element box
TO_PAGE_JS = """([id, world]) => {
  const e = window.cornerstone.getEnabledElements().find(x => x.viewport.id === id);
  const r = e.viewport.element.getBoundingClientRect();
  const c = e.viewport.worldToCanvas(world);
  return {x: r.left + c[0], y: r.top + c[1], box: [r.left, r.top, r.width, r.height]};
}"""
PROBE_ACTIVE_JS = """() => window.cornerstoneTools.ToolGroupManager.getAllToolGroups().some(
  g => g.toolOptions && g.toolOptions.ProbeMONAILabel &&
       g.toolOptions.ProbeMONAILabel.mode === 'Active')"""
PROBES_JS = """() => {
  const m = window.cornerstoneTools.annotation.state.getAnnotationManager();
  const saved = m.saveAnnotations(null, 'ProbeMONAILabel') || {};
  let n = 0;
  for (const k in saved) n += (saved[k].ProbeMONAILabel || []).length;
  return n;
}"""
# voxels set in OHIF's labelmap (segmentation '1', where the MONAI Label panel paints)
PAINTED_JS = """() => {
  const v = window.services.segmentationService.getLabelmapVolume('1');
  if (!v) return 0;
  const a = v.voxelManager ? v.voxelManager.getCompleteScalarDataArray() : v.getScalarData();
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i]) n++;
  return n;
}"""


def _ohif_build() -> Path:
    mod = pytest.importorskip("monailabel", reason="monailabel==0.8.5 (--no-deps) is a [dev] "
                              "test tool; its wheel ships OHIF's MONAI Label build")
    root = Path(mod.__file__).parent / "endpoints" / "static" / "ohif"
    if not (root / "index.html").is_file():
        pytest.skip(f"no OHIF build in the monailabel package ({root})")
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing: apt-get install -y chromium")
    pytest.importorskip("playwright.sync_api", reason="playwright is a [dev] test tool")
    return root


def _upload(dicomweb: str) -> tuple[str, str]:
    """STOW the shared CT series with fresh study/series UIDs. The shared files are
    anonymised down to no SOPClassUID, without which OHIF cannot show them: set CT Image
    Storage, as a PACS would hold them."""
    import pydicom
    from dicomweb_client.api import DICOMwebClient
    from pydicom.uid import CTImageStorage, generate_uid

    study, series = generate_uid(), generate_uid()
    out = []
    for f in sorted(SERIES.iterdir()):
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.get("SOPInstanceUID") or generate_uid()
        ds.SOPClassUID = ds.get("SOPClassUID") or CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.PatientName, ds.PatientID = ds.get("PatientName") or "Test^CT", ds.get("PatientID") or "P1"
        out.append(ds)
    DICOMwebClient(dicomweb).store_instances(out)
    return study, series


class _Site:
    """OHIF's files at /ohif/ (unknown paths: index.html) and /proxy/dicom/* -> Orthanc."""

    def __init__(self, root: Path, dicomweb: str) -> None:
        self.log: list[tuple[str, int]] = []
        site = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/proxy/dicom/"):
                    rest = self.path.split("/", 4)[4]
                    hdr = {"Accept": self.headers.get("Accept", "*/*")}
                    r = httpx.get(f"{dicomweb}/{rest}", headers=hdr, timeout=300)
                    site.log.append((self.path, r.status_code))
                    self.send_response(r.status_code)
                    self.send_header("Content-Type", r.headers.get("content-type", ""))
                    self.send_header("Content-Length", str(len(r.content)))
                    self.end_headers()
                    self.wfile.write(r.content)
                    return
                super().do_GET()

            def translate_path(self, path: str) -> str:
                p = path.split("?")[0]
                f = root / p[len("/ohif/"):] if p.startswith("/ohif/") else root / "-"
                return str(f if f.is_file() else root / "index.html")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = socketserver.ThreadingTCPServer(("127.0.0.1", free_port()), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def site(orthanc: str) -> Iterator[tuple[_Site, str]]:  # noqa: F811 - the imported fixture
    s = _Site(_ohif_build(), orthanc)
    try:
        yield s, orthanc
    finally:
        s.close()


def _liver_clicks(focal_lps: list[float]) -> tuple[Any, Any, list[tuple[int, int, int]],
                                                  list[list[float]]]:
    """Two clicks well inside the liver on the axial slice through ``focal_lps``: the series
    (segloop's reader), the liver on its canonical grid, the clicks' canonical voxels and
    their LPS world points (cornerstone's frame)."""
    import numpy as np
    from scipy import ndimage

    from segloop.io import load_volume
    from segloop.io.writers import load_label

    vol = load_volume(SERIES)
    can = vol.canonical()
    truth = load_label(LIVER, vol, 5)
    ras = np.array([-focal_lps[0], -focal_lps[1], focal_lps[2], 1.0])
    k = round(float((np.linalg.inv(can.affine) @ ras)[2]))
    depth = ndimage.distance_transform_edt(truth[:, :, k])
    first = np.unravel_index(int(np.argmax(depth)), depth.shape)
    far = depth.copy()
    ii, jj = np.indices(depth.shape)
    far[(ii - first[0]) ** 2 + (jj - first[1]) ** 2 < (depth.max() / 2) ** 2] = 0
    second = np.unravel_index(int(np.argmax(far)), far.shape)
    assert far[second] > 5, "the liver slice is too thin for two clicks"
    voxels = [(int(first[0]), int(first[1]), k), (int(second[0]), int(second[1]), k)]
    worlds = []
    for v in voxels:
        x, y, z = (can.affine @ np.array([*v, 1.0]))[:3]
        worlds.append([float(-x), float(-y), float(z)])
    return vol, truth, voxels, worlds


def _on_canonical(vol: Any, data: bytes, suffix: str, tmp: Path) -> Any:
    """A mask file's voxels > 0 on the series' canonical grid (aligned in world space)."""
    from segloop.io.writers import load_label

    path = tmp / f"mask{suffix}"
    path.write_bytes(data)
    return load_label(path, vol, "any")


def test_ohif_opens_a_series_connects_and_segments(site: tuple[_Site, str], serve: Any,
                                                   tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    need_shared_data()
    web, dicomweb = site
    study, series = _upload(dicomweb)
    srv: Server = serve(SEGLOOP_DICOMWEB_URL=dicomweb,
                        SEGLOOP_CORS_ORIGINS=json.dumps([web.url]))
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            ctx = b.new_context(viewport={"width": 1400, "height": 900})
            ctx.add_cookies([{"name": "MONAILABEL_SERVER_URL", "url": f"{web.url}/",
                              "value": f"{srv.url}/monailabel/"}])
            pg = ctx.new_page()
            pg.set_default_timeout(300_000)
            infos: list[int] = []
            pg.on("response", lambda r: infos.append(r.status)
                  if r.url == f"{srv.url}/monailabel/info/" else None)
            pg.goto(f"{web.url}/ohif/monai-label?StudyInstanceUIDs={study}")
            field = pg.locator("#monailabelServerURL")
            field.wait_for()
            assert field.input_value() == f"{srv.url}/monailabel/"
            # the series' pixel data is fetched: frames of all 20 images through the proxy
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and \
                    sum("/frames/" in u and st == 200 for u, st in web.log) < 20:
                time.sleep(1)
            frames = [u for u, st in web.log if "/frames/" in u and st == 200]
            assert len(frames) >= 20, web.log[-5:]
            # connect: OHIF reads segloop's info (a cross-origin call) and names the app
            with pg.expect_response(f"{srv.url}/monailabel/info/"):
                field.locator("xpath=following::button[1]").click()
            pg.locator("p.subtitle", has_text="segloop").wait_for()
            assert infos and infos[-1] == 200
            # /info/'s strategies are offered in the Active Learning tab (segloop's own too)
            assert pg.locator("option[value='segloop']").count() == 1

            # ---- Point Prompts: two clicks on the liver, Run, the label painted
            banner = pg.get_by_role("button", name="Confirm and Hide")
            if banner.count():
                banner.first.click()
            pg.locator("label.tab-label", has_text="Point Prompts").click()
            pg.wait_for_function(PROBE_ACTIVE_JS)
            pg.locator("tr.clickable-row").filter(
                has=pg.get_by_text("object", exact=True)).click()
            axial = pg.wait_for_function(AXIAL_JS).json_value()
            vol, truth, voxels, worlds = _liver_clicks(axial["focal"])
            for n, world in enumerate(worlds, start=1):
                at = pg.evaluate(TO_PAGE_JS, [axial["id"], world])
                left, top, width, height = at["box"]
                assert left < at["x"] < left + width and top < at["y"] < top + height, at
                pg.mouse.click(at["x"], at["y"])
                pg.wait_for_function(f"() => ({PROBES_JS})() >= {n}")
            with pg.expect_response(lambda r: r.request.method == "POST" and
                                    "/monailabel/infer/classic" in r.url) as answer:
                pg.get_by_title("Run PointPrompts").click()
            res = answer.value
            assert res.status == 200, res.text()
            assert f"image={series}" in res.url
            form = res.request.post_data_buffer or b""
            sent = json.loads(form.split(b'name="params"')[1]
                              .split(b"\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0])
            returned = _on_canonical(vol, res.body(), ".nrrd", tmp_path)
            painted = pg.wait_for_function(f"() => ({PAINTED_JS})() || null").json_value()
        finally:
            b.close()
    # OHIF sent the two clicks as foreground voxel indices of the series
    assert len(sent["foreground"]) == 2, sent
    # the returned label: the clicked liver, in 3D, mostly liver
    for v in voxels:
        assert returned[v], f"clicked voxel {v} is not in the returned mask"
    assert len(set(returned.nonzero()[2].tolist())) >= 3
    precision = float((returned & truth).sum() / returned.sum())
    assert precision > 0.8, precision
    # OHIF painted exactly the returned label
    assert painted == int(returned.sum()), (painted, int(returned.sum()))
    # and it is the segloop job's current mask (read back through segloop's REST API)
    jobs = httpx.get(f"{srv.url}/api/v1/jobs", timeout=60).json()
    assert len(jobs) == 1, jobs
    r = httpx.get(f"{srv.url}/api/v1/jobs/{jobs[0]['job_id']}/result", timeout=120)
    assert r.status_code == 200, r.text
    assert (_on_canonical(vol, r.content, ".nii.gz", tmp_path) == returned).all()
    # segloop's CORS is what let the page read the answers: a foreign origin gets no grant
    r = httpx.get(f"{srv.url}/monailabel/info/", headers={"Origin": "http://elsewhere:1"},
                  timeout=60)
    assert "access-control-allow-origin" not in r.headers
