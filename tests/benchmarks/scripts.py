"""For the tests of this folder: load a script of ``benchmarks/`` as a module, and write a
one-case manifest (a NIfTI image, its label and ``cases.csv``) for a script to run on."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import nibabel as nib
import numpy as np

__all__ = ["BENCHMARKS", "load_script", "write_case"]

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_script(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as the module ``_bench_<name>`` (registered in ``sys.modules``:
    dataclasses look their module up); the folder is on ``sys.path`` while it loads, so the
    script's imports of its sibling scripts resolve."""
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return mod


def write_case(folder: Path, img: np.ndarray, truth: np.ndarray, name: str) -> Path:
    """``folder/img.nii.gz`` and ``folder/lab.nii.gz`` (1 x 1 x 3 mm voxels) and the manifest
    ``folder/cases.csv`` naming them as case ``name`` (label value 1, MR); returns the
    manifest's path."""
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(img.astype(np.float32), affine), folder / "img.nii.gz")
    nib.save(nib.Nifti1Image(truth.astype(np.uint8), affine), folder / "lab.nii.gz")
    (folder / "cases.csv").write_text(
        "case_id,image,label,label_value,structure,modality\n"
        f"{name},img.nii.gz,lab.nii.gz,1,{name},MR\n")
    return folder / "cases.csv"
