"""Issue 9 item 12: in an environment with only segloop's base dependencies (no torch,
transformers or psycopg2), every command that needs an optional package says in one line what
is missing and how to install it (exit 2, no traceback); the base commands still work."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from .base_venv import cached_base_venv

PG = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def base_python() -> Iterator[Path]:
    yield cached_base_venv()


@pytest.fixture(scope="session")
def ct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    vol = np.full((24, 24, 6), -100, np.int16)
    vol[6:18, 6:18, 1:5] = 60
    path = tmp_path_factory.mktemp("ct") / "ct.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), path)
    return path


def _segloop(py: Path, *args: object, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEGLOOP_", "PYTHON"))}
    env["SEGLOOP_HOME"] = str(home)
    return subprocess.run([str(py.parent / "segloop"), *map(str, args)], capture_output=True,
                          text=True, encoding="utf-8", timeout=120, env=env)


def _one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("segloop: error:")]
    assert len(errors) == 1, r.stderr
    for n in needles:
        assert n in errors[0], errors[0]


def test_the_venv_has_no_torch(base_python: Path) -> None:
    r = subprocess.run([str(base_python), "-c", "import segloop.cli, importlib.util as u; "
                        "print([m for m in ('torch', 'transformers', 'psycopg2') "
                        "if u.find_spec(m)])"], capture_output=True, text=True, encoding="utf-8", timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_base_commands_work(base_python: Path, ct: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.nii.gz"
    r = _segloop(base_python, "segment", ct, "--box", 5, 5, 18, 18, "--slice", 3, "--engine",
                 "classic", "-q", "-o", out, home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert out.exists()
    assert _segloop(base_python, "users", "add", "x", home=tmp_path).returncode == 0


@pytest.mark.parametrize(("args", "needles"), [
    (("train", "--images", "{d}", "--masks", "{d}", "--out", "{d}/run"),
     ("segloop train", "torch", "pip install 'segloop[sam2]'")),
    (("eval2d", "--images", "{d}", "--masks", "{d}", "--engine", "medsam2"),
     ("torch", "pip install 'segloop[sam2]'")),
    (("bench", "engine", "--size", "64"), ("torch", "pip install 'segloop[sam2]'")),
    (("models", "import", "{d}/weights.pt", "--as", "medsam2", "--convert"),
     ("torch", "pip install 'segloop[sam2]'")),
    (("segment", "{ct}", "--box", "5", "5", "18", "18", "--slice", "3", "--engine", "medsam2",
      "-o", "{d}/o.nii.gz"), ("torch", "pip install")),
    (("users", "list", "--database-url", PG), ("psycopg2", "pip install 'segloop[service]'")),
    (("serve", "--database-url", PG), ("psycopg2", "pip install 'segloop[service]'")),
    (("worker", "--database-url", PG), ("psycopg2", "pip install 'segloop[service]'")),
])
def test_missing_optional_package_is_one_line(base_python: Path, ct: Path, tmp_path: Path,
                                              args: tuple[str, ...], needles: tuple[str, ...]
                                              ) -> None:
    import zipfile

    with zipfile.ZipFile(tmp_path / "weights.pt", "w") as zf:  # torch.save's layout, no tensors
        zf.writestr("weights/data.pkl", b"\x80\x02}q\x00.")
    argv = [a.format(d=tmp_path, ct=ct) for a in args]
    _one_line_error(_segloop(base_python, *argv, home=tmp_path / "home"), *needles)
