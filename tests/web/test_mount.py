"""The viewer's routes on a FastAPI app (no browser): page, assets, NiiVue, config."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from segloop.api import create_app
from segloop.web import STATIC_DIR, find_niivue_dist, mount

from .conftest import make_settings


def test_page_and_assets_are_served(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    app = create_app(settings)
    mount(app, settings)
    with TestClient(app) as c:
        r = c.get("/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="/static/viewer.js">' in r.text
        for name in ("viewer.js", "api.js", "nifti.js", "app.css", "tools.js", "objects.js",
                     "workfiles.js", "preview.js", "state.js", "view.js", "mask.js", "prompts.js",
                     "lists.js", "open.js", "keys.js"):
            assert c.get(f"/static/{name}").status_code == 200, name
        assert c.get("/static/../__init__.py").status_code == 404
        # the API is not shadowed by the viewer's routes
        assert c.get("/health").json()["status"] == "ok"
        assert c.get("/api/v1/jobs").json() == []
        cfg = c.get("/web/config.json").json()
        if find_niivue_dist() is None:
            pytest.skip("node_modules/@niivue/niivue is missing: run `npm ci` in the checkout")
        assert cfg["niivue"] is True
        js = c.get(cfg["niivue_url"])
        assert js.status_code == 200 and "javascript" in js.headers["content-type"]
        assert "export {" in js.text[-4000:]


def test_missing_node_modules_is_reported(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    app = create_app(settings)
    mount(app, settings, node_modules=tmp_path / "node_modules")
    with TestClient(app) as c:
        cfg = c.get("/web/config.json").json()
        assert cfg["niivue"] is False and cfg["niivue_url"] is None
        assert "npm ci" in cfg["install_hint"]
        assert c.get("/vendor/niivue/index.js").status_code == 404
        assert c.get("/").status_code == 200


def test_static_files_are_ours_only() -> None:
    """No third-party code is committed: the page's folder holds only our own small files."""
    files = sorted(STATIC_DIR.iterdir())
    names = {p.name for p in files}
    assert {"api.js", "app.css", "favicon.svg", "index.html", "nifti.js", "viewer.js"} <= names
    assert all(p.suffix in {".js", ".css", ".html", ".svg"} for p in files), names
    assert all(p.stat().st_size < 100_000 for p in files)
    # each of the page's ES modules says first what it is for (no vendored bundle slips in)
    for p in files:
        if p.suffix == ".js":
            assert p.read_text(encoding="utf-8").startswith("// "), p.name


MAX_MODULE_LINES = 500  # STYLE.md: one concern per module, ~400 lines is a lot
IMPORT = re.compile(r"^import \{([^}]*)\} from '\./([\w.]+)';", re.M)
EXPORT = re.compile(r"^export (?:async )?(?:function|const|let|class) (\w+)", re.M)


def test_page_modules_are_small_and_their_imports_resolve() -> None:
    """No module of the page is over ~500 lines (viewer.js was 1,260), and every name a module
    imports from another of the page's modules is exported there (a split that lost an export
    would only fail in the browser, at load)."""
    modules = {p.name: p.read_text(encoding="utf-8") for p in STATIC_DIR.glob("*.js")}
    sizes = {name: text.count("\n") for name, text in modules.items()}
    assert max(sizes.values()) <= MAX_MODULE_LINES, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
    exports = {name: set(EXPORT.findall(text)) for name, text in modules.items()}
    for name, text in modules.items():
        for names, target in IMPORT.findall(text):
            assert target in modules, f"{name} imports the missing module {target}"
            wanted = {n.strip() for n in names.split(",") if n.strip()}
            missing = sorted(wanted - exports[target])
            assert not missing, f"{name}: {missing} not exported by {target}"
