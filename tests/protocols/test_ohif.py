"""The real OHIF viewer (the MONAI Label build shipped in the monailabel==0.8.5 wheel) in headless
Chromium, with a real Orthanc as its DICOMweb source and `segloop serve` as its MONAI Label
server: the study list comes from Orthanc, the series opens (its JPEG 2000 frames fetched
through the page's ``/proxy/dicom/`` as OHIF's build expects), and the MONAI Label panel
connects to segloop (``GET /monailabel/info/`` across origins: CORS). Running an inference
from the page is not driven yet (docs/clients.md, "OHIF itself, headless")."""

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


def test_ohif_opens_a_series_and_connects_to_segloop(site: tuple[_Site, str], serve: Any
                                                      ) -> None:
    from playwright.sync_api import sync_playwright

    need_shared_data()
    web, dicomweb = site
    study, _series = _upload(dicomweb)
    srv: Server = serve(SEGLOOP_DICOMWEB_URL=dicomweb,
                        SEGLOOP_CORS_ORIGINS=json.dumps([web.url]))
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            ctx = b.new_context(viewport={"width": 1400, "height": 900})
            ctx.add_cookies([{"name": "MONAILABEL_SERVER_URL", "url": f"{web.url}/",
                              "value": f"{srv.url}/monailabel/"}])
            pg = ctx.new_page()
            infos: list[int] = []
            pg.on("response", lambda r: infos.append(r.status)
                  if r.url == f"{srv.url}/monailabel/info/" else None)
            pg.goto(f"{web.url}/ohif/monai-label?StudyInstanceUIDs={study}", timeout=300_000)
            field = pg.locator("#monailabelServerURL")
            field.wait_for(timeout=300_000)
            assert field.input_value() == f"{srv.url}/monailabel/"
            # the series' pixel data is fetched: frames of all 20 images through the proxy
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and \
                    sum("/frames/" in u and st == 200 for u, st in web.log) < 20:
                time.sleep(1)
            frames = [u for u, st in web.log if "/frames/" in u and st == 200]
            assert len(frames) >= 20, web.log[-5:]
            # connect: OHIF reads segloop's info (a cross-origin call) and names the app
            field.locator("xpath=following::button[1]").click(timeout=60_000)
            pg.locator("p.subtitle", has_text="segloop").wait_for(timeout=120_000)
            assert infos and infos[-1] == 200
            # /info/'s strategies are offered in the Active Learning tab (segloop's own too)
            assert pg.locator("option[value='segloop']").count() == 1
            assert pg.get_by_text("Point Prompts").count() >= 1
        finally:
            b.close()
    # segloop's CORS is what let the page read the answer: a foreign origin gets no grant
    r = httpx.get(f"{srv.url}/monailabel/info/", headers={"Origin": "http://elsewhere:1"},
                  timeout=60)
    assert "access-control-allow-origin" not in r.headers
