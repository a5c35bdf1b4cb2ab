"""The :class:`Volume` type: voxels plus the geometry that places them in patient space.

A Volume keeps the array exactly as the source file stores it (axes i, j, k) together with a
4x4 affine mapping voxel indices to RAS+ millimetres (nibabel's convention, also for DICOM,
NRRD and MHA, whose LPS geometry is converted on reading). ``canonical()`` gives the
closest-canonical RAS view that every public coordinate refers to (docs/DESIGN.md);
``mask_to_source()`` maps a canonical mask back onto the source grid. No torch, no I/O here.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.ism, segloop.train, segloop.eval, segloop.jobs, segloop.datastore, segloop.engines,
segloop.models (the layer contract, pyproject.toml).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt
from nibabel import orientations as ornt

__all__ = ["DicomRef", "Volume"]

_RAS = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


@dataclass(frozen=True)
class DicomRef:
    """Where a DICOM series came from, enough to reference it from a DICOM-SEG.

    files: the source files sorted along the volume's k axis (one per slice).
    series_uid / study_uid: the series and study instance UIDs.
    """

    files: tuple[Path, ...]
    series_uid: str
    study_uid: str


@dataclass(frozen=True)
class Volume:
    """A 3D image on its source grid.

    data: ``(I, J, K)`` array in the source file's voxel order (numeric dtype; CT in HU).
    affine: ``(4, 4)`` float64, voxel index -> RAS+ mm.
    source_format: ``"nifti" | "nrrd" | "mha" | "dicom" | "npz"`` (or another reader's name).
    modality: ``"CT"``, ``"MR"``, ... when known, else None.
    source_path: the file or folder read, if any.
    dicom: the DICOM series reference for DICOM input, else None.
    meta: free-form extra metadata (reader specific, JSON-able values).
    header: the source file's own header object when the reader has one (a nibabel
        ``Nifti1Header``/``Nifti2Header`` for NIfTI), so a mask can be written with the same
        qform/sform; not JSON-able, ignored in comparisons. Refers to the SOURCE grid.
    """

    data: npt.NDArray[Any]
    affine: npt.NDArray[np.float64]
    source_format: str
    modality: str | None = None
    source_path: Path | None = None
    dicom: DicomRef | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    header: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.data.ndim != 3:
            raise ValueError(f"Volume data must be 3D, got shape {self.data.shape}")
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(I, J, K)``."""
        s = self.data.shape
        return (int(s[0]), int(s[1]), int(s[2]))

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the array axes (lengths of the affine's columns)."""
        sp = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return (float(sp[0]), float(sp[1]), float(sp[2]))

    @property
    def orientation(self) -> str:
        """Axis codes of the array, e.g. ``"RAS"`` or ``"LPS"`` (nibabel's aff2axcodes)."""
        return "".join(str(c) for c in nib.aff2axcodes(self.affine))

    def _to_ras_transform(self) -> npt.NDArray[np.float64]:
        return np.asarray(ornt.ornt_transform(ornt.io_orientation(self.affine), _RAS))

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        """Shape of ``canonical().data``, computed without moving any voxels."""
        t = self._to_ras_transform()
        out = [0, 0, 0]
        for axis, (target, _flip) in enumerate(t):
            out[int(target)] = self.shape[axis]
        return (out[0], out[1], out[2])

    def is_canonical(self) -> bool:
        """True when the array is already in closest-canonical RAS order."""
        t = self._to_ras_transform()
        return bool(np.all(t[:, 0] == [0, 1, 2]) and np.all(t[:, 1] == 1))

    def canonical(self) -> Volume:
        """The closest-canonical RAS view (axes x, y, z; z axial). Same voxels, same space."""
        if self.is_canonical():
            return self
        t = self._to_ras_transform()
        data = np.ascontiguousarray(ornt.apply_orientation(self.data, t))
        affine = self.affine @ ornt.inv_ornt_aff(t, self.data.shape)
        return replace(self, data=data, affine=affine.astype(np.float64))

    def canonical_to_source(self, arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Map an array on the canonical grid (shape of ``canonical().shape``) to the source grid."""
        if self.is_canonical():
            return arr
        t = self._to_ras_transform()
        inv = ornt.ornt_transform(_RAS, ornt.io_orientation(self.affine))
        out = np.ascontiguousarray(ornt.apply_orientation(arr, inv))
        # sanity: the round trip must land on the source shape
        if out.shape != self.shape:  # pragma: no cover - guards a nibabel contract
            raise AssertionError(f"orientation round trip gave {out.shape}, want {self.shape} ({t})")
        return out

    def source_to_canonical(self, arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Map an array on the source grid to the canonical grid."""
        if self.is_canonical():
            return arr
        return np.ascontiguousarray(ornt.apply_orientation(arr, self._to_ras_transform()))
