"""A virtual environment with segloop and only its base dependencies (no torch, transformers,
psycopg2...), built without a network: each distribution of the base dependency closure is
linked from the running interpreter's site-packages, then segloop is installed editable with
``pip --no-deps``. Used by the optional-dependency tests; built once and reused while
pyproject.toml, the checkout and the interpreter stay the same (segloop is installed editable,
so source edits need no rebuild)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import venv
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
#: what the editable install needs to build (present in the venv, not imported by segloop)
BUILD_TOOLS = ("setuptools", "wheel")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def base_closure() -> list[metadata.Distribution]:
    """Installed distributions segloop's base dependencies need (no extras)."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    todo = [Requirement(d) for d in deps] + [Requirement(t) for t in BUILD_TOOLS]
    seen: dict[str, metadata.Distribution] = {}
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = _norm(req.name)
        if key in seen:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue  # e.g. wheel, when absent: pip copes
        seen[key] = dist
        todo += [Requirement(r) for r in dist.requires or []]
        for extra in req.extras:  # e.g. uvicorn[standard]
            todo += [r for r in (Requirement(x) for x in dist.requires or [])
                     if r.marker is not None and r.marker.evaluate({"extra": extra})]
    return list(seen.values())


def build_base_venv(dest: Path) -> Path:
    """Create the venv at ``dest``; returns its python."""
    venv.create(dest, with_pip=False, symlinks=True)
    py = dest / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], capture_output=True, text=True, encoding="utf-8",
                               check=True).stdout.strip())
    for dist in base_closure():
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if ".." not in Path(str(f)).parts}
        base = Path(str(dist.locate_file("")))
        for top in tops:
            src, link = base / top, site / top
            if src.exists() and not link.exists() and top != "__pycache__":
                os.symlink(src, link)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q",
                    "--no-deps", "--no-build-isolation", "--no-index", "-e", str(ROOT)],
                   check=True, capture_output=True, text=True, encoding="utf-8")
    return py


def cached_base_venv() -> Path:
    """The base venv of this checkout, built on first use under the temp folder."""
    key = hashlib.sha256(b"\0".join([(ROOT / "pyproject.toml").read_bytes(), bytes(ROOT),
                                      sys.executable.encode()])).hexdigest()[:16]
    dest = Path(tempfile.gettempdir()) / f"segloop-base-venv-{key}"
    py = dest / "bin" / "python"
    if (dest / ".ready").exists() and py.exists():
        return py
    shutil.rmtree(dest, ignore_errors=True)
    build_base_venv(dest)
    (dest / ".ready").touch()
    return py
