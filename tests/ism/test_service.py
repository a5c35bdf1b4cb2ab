"""The ISM service over real HTTP: the example-shaped request, every bad input, auth, metrics."""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from segloop.ism.service import create_ism_app
from segloop.ism.settings import IsmSettings
from segloop.ism.templates import load_templates

from .conftest import box_mesh, synthetic_scene, write_ply

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _b64(img: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


class Live:
    """``create_ism_app`` served by uvicorn in a thread on a free port."""

    def __init__(self, settings: IsmSettings) -> None:
        import uvicorn

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_ism_app(settings), host="127.0.0.1",
                                                    port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Live:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A CAD box, its templates (rendered once), a synthetic RGB-D frame of it."""
    root = tmp_path_factory.mktemp("ism")
    v, f = box_mesh((60.0, 40.0, 25.0))
    (root / "objects").mkdir()
    cad = write_ply(root / "objects" / "box.ply", v, f, colors=np.tile([[30, 160, 220]], (8, 1)))
    load_templates(root / "templates" / "box", cad)  # renders the 42 views once
    rgb, depth, K, truth = synthetic_scene(v, f, (30, 160, 220), view=27)
    return {"root": root, "cad": cad, "tpl": root / "templates" / "box", "rgb": rgb, "depth": depth,
            "K": K, "truth": truth}


def _settings(world: dict[str, Any], **kw: Any) -> IsmSettings:
    return IsmSettings(template_dir=world["root"] / "templates", cad_model_path=world["cad"],
                       cache_dir=world["root"] / "cache", **kw)


def _request(world: dict[str, Any], **over: Any) -> dict[str, Any]:
    body = {"rgb_image": _b64(world["rgb"]), "depth_image": _b64(world["depth"]),
            "cam_params": {"cam_K": world["K"].tolist(), "depth_scale": 1.0},
            "segmentor_model": "classic", "stability_score_thresh": 0.97,
            "template_dir": str(world["tpl"]), "cad_path": str(world["cad"]),
            "client_version": "x", "extra": {"ignored": True}}
    body.update(over)
    return body


@pytest.fixture(scope="module")
def live(world: dict[str, Any]) -> Iterator[Live]:
    with Live(_settings(world, max_pixels=700 * 500)) as srv:
        yield srv


def test_example_request(live: Live, world: dict[str, Any]) -> None:
    r = httpx.post(f"{live.url}/api/v1/inference", json=_request(world), timeout=600)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["success"] is True and out["error_message"] is None
    assert out["template_dir_used"] == str(world["tpl"]) and out["cad_path_used"] == str(world["cad"])
    assert out["inference_time"] > 0 and out["scores"] == [d["score"] for d in out["detections"]]
    for d in out["detections"]:
        m = mask_utils.decode({"size": d["segmentation"]["size"],
                               "counts": d["segmentation"]["counts"].encode()})
        assert m.shape == (480, 640)
        x, y, w, h = d["bbox"]
        assert x >= 0 and y >= 0 and x + w <= 640 and y + h <= 480
        assert 0.0 <= d["score"] <= 1.0 and d["category_id"] == 1
    top = mask_utils.decode({**out["detections"][0]["segmentation"],
                             "counts": out["detections"][0]["segmentation"]["counts"].encode()}) > 0
    truth = world["truth"]
    assert (top & truth).sum() / (top | truth).sum() > 0.9
    vis = Image.open(io.BytesIO(base64.b64decode(out["visualization"])))
    assert vis.format == "PNG" and vis.size == (1280, 480)
    assert httpx.get(f"{live.url}/health").json()["status"] == "healthy"
    metrics = httpx.get(f"{live.url}/metrics").text
    assert 'ism_requests_total{status="200"}' in metrics and "ism_stage_seconds" in metrics


def test_sam_request_falls_back_to_classic(live: Live, world: dict[str, Any]) -> None:
    r = httpx.post(f"{live.url}/api/v1/inference", json=_request(world, segmentor_model="sam"), timeout=600)
    assert r.status_code == 200 and r.json()["segmentor_model_used"] == "classic"


def _png(arr: np.ndarray) -> str:
    return _b64(arr)


BAD: list[tuple[str, dict[str, Any], int, str]] = [
    ("not base64", {"rgb_image": "@@not base64@@"}, 422, "not valid base64"),
    ("not an image", {"rgb_image": base64.b64encode(b"hello world").decode()}, 415, "not an image"),
    ("sizes differ", {"depth_image": "DEPTH_SMALL"}, 422, "send a registered RGB-D pair"),
    ("depth 8-bit", {"depth_image": "DEPTH_8BIT"}, 422, "16-bit"),
    ("cam_K 2x3", {"cam_params": {"cam_K": [[1, 0, 0], [0, 1, 0]], "depth_scale": 1.0}}, 422, "3×3"),
    ("cam_K missing", {"cam_params": {"depth_scale": 1.0}}, 422, "cam_params.cam_K"),
    ("missing CAD", {"cad_path": "ROOT/objects/nope.ply"}, 422, "does not exist"),
    ("non-PLY CAD", {"cad_path": "ROOT/objects/model.obj"}, 422, "not a .ply"),
    ("fake PLY", {"cad_path": "ROOT/objects/fake.ply", "template_dir": "ROOT/templates/fake"}, 415,
     "not a PLY"),
    ("template_dir outside roots", {"template_dir": "/etc"}, 403, "outside the folders"),
    ("cad outside roots", {"cad_path": "/etc/passwd"}, 403, "outside the folders"),
    ("too many pixels", {"rgb_image": "BIG", "depth_image": "BIGD"}, 413, "ISM_MAX_PIXELS"),
    ("unknown backend", {"segmentor_model": "yolo"}, 422, "classic, sam, sam2, fastsam"),
]


@pytest.mark.parametrize(("case", "over", "status", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_input(live: Live, world: dict[str, Any], case: str, over: dict[str, Any], status: int,
                   message: str) -> None:
    root = world["root"]
    (root / "objects" / "model.obj").write_text("v 0 0 0\n")
    (root / "objects" / "fake.ply").write_text("solid nothing\n")
    subst = {"DEPTH_SMALL": _png(np.zeros((100, 100), np.uint16)),
             "DEPTH_8BIT": _png(np.zeros((480, 640), np.uint8)),
             "BIG": _png(np.zeros((600, 800, 3), np.uint8)), "BIGD": _png(np.zeros((600, 800), np.uint16))}
    body = _request(world)
    for k, v in over.items():
        body[k] = subst.get(v, v.replace("ROOT", str(root))) if isinstance(v, str) else v
    if case == "cam_K missing":
        body["cam_params"] = {"depth_scale": 1.0}
    r = httpx.post(f"{live.url}/api/v1/inference", json=body, timeout=600)
    assert r.status_code == status, r.text
    out = r.json()
    assert out["success"] is False and message in out["error_message"], out["error_message"]
    assert httpx.get(f"{live.url}/health").status_code == 200  # still serving


def test_not_json_and_missing_fields(live: Live) -> None:
    r = httpx.post(f"{live.url}/api/v1/inference", content=b"{nope", timeout=60)
    assert r.status_code == 422 and "not JSON" in r.json()["error_message"]
    r = httpx.post(f"{live.url}/api/v1/inference", json={"rgb_image": "x"}, timeout=60)
    assert r.status_code == 422 and "depth_image" in r.json()["error_message"]


def test_concurrent_requests_queue_on_one_model(live: Live, world: dict[str, Any]) -> None:
    body = _request(world)
    with ThreadPoolExecutor(2) as pool:
        futs = [pool.submit(httpx.post, f"{live.url}/api/v1/inference", json=body, timeout=600)
                for _ in range(2)]
        t0 = time.monotonic()
        while not httpx.get(f"{live.url}/health").json()["busy"] and time.monotonic() - t0 < 30:
            time.sleep(0.05)
        assert httpx.get(f"{live.url}/health", timeout=5).status_code == 200  # loop free while busy
        outs = [f.result() for f in futs]
    assert [o.status_code for o in outs] == [200, 200]
    assert outs[0].json()["scores"] == outs[1].json()["scores"]


def test_api_keys_beyond_loopback(world: dict[str, Any]) -> None:
    from fastapi.testclient import TestClient

    from segloop.config import load_settings
    from segloop.jobs.store import JobStore

    store = JobStore(load_settings(None))
    key = store.add_user("robot", "annotator")
    store.close()
    client = TestClient(create_ism_app(_settings(world, require_api_keys=True)))
    assert client.get("/health").status_code == 200
    r = client.post("/api/v1/inference", json={})
    assert r.status_code == 401 and "X-API-Key" in r.json()["error_message"]
    assert client.post("/api/v1/inference", json={}, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.get("/metrics").status_code == 401
    r = client.post("/api/v1/inference", json={"rgb_image": "x"}, headers={"X-API-Key": key})
    assert r.status_code == 422  # past auth, on to validation
    assert client.get("/metrics", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_no_fallback_answers_503(world: dict[str, Any]) -> None:
    from fastapi.testclient import TestClient

    client = TestClient(create_ism_app(_settings(world, fallback_backend=None)))
    r = client.post("/api/v1/inference", json=_request(world, segmentor_model="sam"))
    assert r.status_code == 503 and "classic" in r.json()["error_message"]


def test_cli_serve_subprocess(world: dict[str, Any], tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "ISM_SERVER_PORT": str(port),
           "ISM_CAD_MODEL_PATH": str(world["cad"]), "ISM_TEMPLATE_DIR": str(world["root"] / "templates"),
           "ISM_CACHE_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", "from segloop.cli import main; raise SystemExit(main())",
                             "ism", "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None, "ism serve did not start"
                time.sleep(0.2)
        assert health["status"] == "healthy"
        r = httpx.post(f"http://127.0.0.1:{port}/api/v1/inference",
                       json=_request(world, template_dir="/tmp"), timeout=60)
        assert r.status_code == 403
    finally:
        proc.terminate()
        proc.wait(10)


def test_mounted_beside_the_jobs_api(tmp_path: Path) -> None:
    """`segloop serve --ism`: the same routes under /api/v1/ism/, keys as the API has them."""
    from fastapi.testclient import TestClient

    from segloop.api import create_app
    from segloop.config import load_settings
    from segloop.ism.service import mount_ism
    from segloop.jobs.store import JobStore

    settings = load_settings(None, home=tmp_path / "home", json_logs=False, require_api_keys=True)
    app = create_app(settings)
    mount_ism(app, settings)
    store = JobStore(settings)
    key = store.add_user("robot", "annotator")
    store.close()
    with TestClient(app) as client:
        assert client.get("/api/v1/ism/health").json()["status"] == "healthy"
        assert client.post("/api/v1/ism/inference", json={}).status_code == 401
        r = client.post("/api/v1/ism/inference", json={"rgb_image": "x"}, headers={"X-API-Key": key})
        assert r.status_code == 422 and r.json()["success"] is False
        assert client.get("/health").status_code == 200  # the jobs API is still there
