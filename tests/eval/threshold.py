"""A small real threshold engine and a synthetic manifest on disk, as fixtures for the eval and
CLI tests (their conftest.py files import them).

``ThresholdEngine`` is a complete (if simple) engine: two-class threshold inside the box, slice-
to-slice propagation constrained to a dilation of the neighbouring slice, and point corrections
that add or remove the connected component under the click. It lets the runner be tested
independently of the ``classic`` engine's quality.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from segloop.engines.registry import register_engine
from segloop.engines.state import SessionState
from segloop.errors import EngineError
from segloop.io.volume import Volume
from segloop.types import BoolArray, Prompts, SliceResult, validate_prompts


def _component_at(mask: BoolArray, x: int, y: int) -> BoolArray:
    lab, _ = ndi.label(mask)
    k = lab[x, y]
    return lab == k if k else np.zeros_like(mask)


def _disk(shape: tuple[int, ...], x: int, y: int, r: int = 2) -> BoolArray:
    xx, yy = np.ogrid[: shape[0], : shape[1]]
    return np.asarray((xx - x) ** 2 + (yy - y) ** 2 <= r * r)


class ThresholdSession:
    def __init__(self, volume: Volume) -> None:
        can = volume.canonical()
        self._img = np.asarray(can.data, dtype=np.float32)
        self._state = SessionState(can.shape)
        self._thr: dict[int, float] = {}

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._state.shape

    def _apply_points(self, z: int, mask: BoolArray, prompts: Prompts, thr: float) -> BoolArray:
        bright = self._img[:, :, z] > thr
        out = mask.copy()
        for (x, y), lab in zip(prompts.points.tolist(), prompts.labels.tolist(), strict=True):
            if lab == 1:
                add = _component_at(bright, x, y) if bright[x, y] else _disk(out.shape, x, y)
                out |= add
            else:
                out &= ~(_component_at(out, x, y) if out[x, y] else _disk(out.shape, x, y))
        return out

    def segment_slice(self, z: int, prompts: Prompts, object_id: int = 1) -> BoolArray:
        validate_prompts(z, prompts, self.shape)
        img2d = self._img[:, :, z]
        mask = np.zeros(img2d.shape, dtype=bool)
        thr = self._thr.get(object_id, float(img2d.mean()))
        if prompts.box is not None:
            x0, y0, x1, y1 = prompts.box
            inside = img2d[x0 : x1 + 1, y0 : y1 + 1]
            lo, hi = np.percentile(inside, [10, 90])
            thr = float(lo + hi) / 2
            fg = np.zeros_like(mask)
            fg[x0 : x1 + 1, y0 : y1 + 1] = inside > thr
            lab, n = ndi.label(fg)
            if n:
                mask = lab == 1 + int(np.argmax(np.bincount(lab.ravel())[1:]))
        self._thr[object_id] = thr
        mask = self._apply_points(z, mask, prompts, thr)
        self._state.set_slice(object_id, z, mask, prompts)
        return mask

    def propagate(
        self, z: int, mask2d: BoolArray | None = None, object_id: int = 1
    ) -> Iterator[SliceResult]:
        st = self._state.get(object_id)
        if mask2d is not None:
            st.mask[:, :, z] = mask2d
        thr = self._thr.get(object_id, float(self._img.mean()))
        spans = [st.span(z, 1), st.span(z, -1)]
        total, done = sum(len(s) for s in spans), 0
        for span in spans:
            prev = st.mask[:, :, z]
            for zz in span:
                if prev.any():
                    cand = (self._img[:, :, zz] > thr) & ndi.binary_dilation(prev, iterations=2)
                    lab, _ = ndi.label(cand)
                    keep = np.unique(lab[prev & cand])
                    cand = np.isin(lab, keep[keep > 0])
                else:
                    cand = np.zeros_like(prev)
                st.mask[:, :, zz] = cand
                prev = cand
                done += 1
                yield SliceResult(zz, cand, done, total)

    def refine(self, z: int, prompts: Prompts, object_id: int = 1) -> Iterator[SliceResult]:
        validate_prompts(z, prompts, self.shape)
        st = self._state.get(object_id)
        thr = self._thr.get(object_id, float(self._img.mean()))
        mask = self._apply_points(z, st.mask[:, :, z], prompts, thr)
        old = st.prompts.get(z)
        self._state.set_slice(object_id, z, mask, old.merged(prompts) if old else prompts)
        yield from self.propagate(z, object_id=object_id)

    def mask(self, object_id: int = 1) -> BoolArray:
        return self._state.get(object_id).mask

    def set_mask(self, mask3d: BoolArray, object_id: int = 1) -> None:
        self._state.set_mask(object_id, mask3d)

    def objects(self) -> list[int]:
        return sorted(self._state.objects)


class ThresholdEngine:
    name: ClassVar[str] = "test-threshold"
    description: ClassVar[str] = "two-class threshold in the box (eval tests)"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return None

    def open(self, volume: Volume) -> ThresholdSession:
        return ThresholdSession(volume)


class _FailingSession(ThresholdSession):
    def refine(self, z: int, prompts: Prompts, object_id: int = 1) -> Iterator[SliceResult]:
        raise EngineError("this engine cannot refine (eval test)")


class FailingEngine(ThresholdEngine):
    """Segments like ThresholdEngine but raises on the first correction."""

    name: ClassVar[str] = "test-failing"

    def open(self, volume: Volume) -> ThresholdSession:
        return _FailingSession(volume)


@pytest.fixture
def eval_engines() -> dict[str, str]:
    """Register the test engines in this process; returns {"threshold": name, "failing": name}."""
    register_engine(ThresholdEngine.name, ThresholdEngine)
    register_engine(FailingEngine.name, FailingEngine)
    return {"threshold": ThresholdEngine.name, "failing": FailingEngine.name}


def ellipsoid(shape: tuple[int, int, int], centre_mm: tuple[float, float, float],
              radii_mm: tuple[float, float, float], spacing: tuple[float, float, float]) -> BoolArray:
    """Boolean ellipsoid on a grid of ``spacing`` mm (voxel centres at index * spacing)."""
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    acc = np.zeros(shape, dtype=float)
    for g, c, r, s in zip(grids, centre_mm, radii_mm, spacing, strict=True):
        acc = acc + ((g * s - c) / r) ** 2
    return np.asarray(acc <= 1.0)


@pytest.fixture
def synthetic_manifest(tmp_path: Path) -> Path:
    """A manifest of 2 cases in tmp_path: a bright ellipsoid CT-like volume and an MR-like one.

    The first label is stored on a y-flipped grid (another affine, same physical space) with
    label value 3 among others; the second uses ``any``. Returns the manifest path (root = its folder).
    """
    rng = np.random.default_rng(0)
    sp = (1.0, 1.0, 2.5)
    shape = (48, 40, 16)
    aff = np.diag([*sp, 1.0])
    blob = ellipsoid(shape, (24.0, 13.0, 20.0), (10.0, 8.0, 12.0), sp)
    ct = np.where(blob, 120.0, -20.0) + rng.normal(0, 40, shape)
    nib.save(nib.Nifti1Image(ct.astype(np.float32), aff), tmp_path / "ct.nii.gz")
    lab = np.zeros(shape, np.uint8)
    lab[blob] = 3
    lab[:5, :5, :2] = 1  # another structure that must be ignored
    flip = np.diag([1.0, -1.0, 1.0, 1.0])
    flip[1, 3] = shape[1] - 1
    flipped_aff = aff @ flip  # index j' = (ny - 1) - j: same physical points
    nib.save(nib.Nifti1Image(lab[:, ::-1, :].copy(), flipped_aff), tmp_path / "ct_label.nii.gz")

    blob2 = ellipsoid(shape, (20.0, 18.0, 17.5), (7.0, 9.0, 10.0), sp)
    mr = np.where(blob2, 400.0, 100.0) + rng.normal(0, 90, shape)
    nib.save(nib.Nifti1Image(mr.astype(np.float32), aff), tmp_path / "mr.nii.gz")
    nib.save(nib.Nifti1Image(blob2.astype(np.uint8) * 7, aff), tmp_path / "mr_label.nii.gz")
    man = tmp_path / "cases.csv"
    man.write_text(
        "case_id,image,label,label_value,structure,modality,patient_id\n"
        "ct_blob,ct.nii.gz,ct_label.nii.gz,3,blob,CT,p1\n"
        "mr_blob,mr.nii.gz,mr_label.nii.gz,any,blob,MR,p2\n"
    )
    return man
