"""MONAI Label prompts and results: from the uploaded file's voxel indices to segloop's grid and back.

MONAI Label clients (3D Slicer, OHIF, MITK) send ``foreground`` / ``background`` clicks and a
``roi`` as voxel indices ``[i, j, k]`` of the file they uploaded, in that file's storage order
(an LPS-stored NIfTI or a DICOM series has a different order than segloop's closest-canonical
RAS grid). :func:`to_canonical` maps an index, :func:`roi_to_canonical` a ROI (each
``[lo, hi]`` pair is sorted: Slicer may send it reversed), and :func:`plan` turns the prompts
into the one ``segment`` step that starts an object afresh. :func:`write_result` writes a
canonical mask on the upload's grid in the requested file type and dtype. Imports numpy,
nibabel and segloop.io; no torch, no FastAPI.
Must not import segloop.cli (the layer contract, pyproject.toml).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from nibabel import orientations as ornt

from segloop.errors import InputError, PromptError
from segloop.io.volume import Volume

from .tasks import Step, StepKind

__all__ = ["RESULT_DTYPES", "RESULT_EXTENSIONS", "Roi", "plan", "roi_to_canonical",
           "to_canonical", "write_result"]

_RAS = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)

RESULT_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".seg.nrrd", ".mha")
RESULT_DTYPES = ("uint8", "uint16", "int16", "int32", "float32")


def _transform(vol: Volume) -> npt.NDArray[np.float64]:
    return np.asarray(ornt.ornt_transform(ornt.io_orientation(vol.affine), _RAS))


def to_canonical(vol: Volume, ijk: Any) -> tuple[int, int, int]:
    """The canonical ``(x, y, z)`` of a voxel index ``(i, j, k)`` of the file's array.

    PromptError when it is not three numbers inside the array."""
    try:
        idx = [round(float(v)) for v in ijk]
    except (TypeError, ValueError, OverflowError):
        raise PromptError(f"a point must be three voxel indices [i, j, k], got {ijk!r}") from None
    if len(idx) != 3:
        raise PromptError(f"a point must be three voxel indices [i, j, k], got {ijk!r}")
    shape = vol.shape
    if not all(0 <= v < n for v, n in zip(idx, shape, strict=True)):
        raise PromptError(f"point {idx} lies outside the image (shape {list(shape)})")
    out = [0, 0, 0]
    for axis, (target, flip) in enumerate(_transform(vol)):
        v = idx[axis]
        out[int(target)] = shape[axis] - 1 - v if flip < 0 else v
    return out[0], out[1], out[2]


@dataclass(frozen=True)
class Roi:
    """A box in canonical voxel indices, bounds inclusive: ``lo`` and ``hi`` are (x, y, z)."""

    lo: tuple[int, int, int]
    hi: tuple[int, int, int]

    def contains_z(self, z: int) -> bool:
        """Whether axial slice z is inside."""
        return self.lo[2] <= z <= self.hi[2]

    def clip(self, mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
        """``mask`` (X, Y, Z) with everything outside the box cleared."""
        out = np.zeros_like(mask)
        sl = tuple(slice(a, b + 1) for a, b in zip(self.lo, self.hi, strict=True))
        out[sl] = mask[sl]
        return out


def roi_to_canonical(vol: Volume, roi: Any) -> Roi:
    """A MONAI Label ``roi`` as a canonical :class:`Roi`: file indices ``[i0, i1, j0, j1, k0,
    k1]`` (3D Slicer's form: RAS corners mapped to IJK, so a pair can come reversed) or
    ``[[i0, i1], [j0, j1], [k0, k1]]``; each pair is sorted and clipped to the image."""
    usage = "roi must be [i0, i1, j0, j1, k0, k1] or [[i0, i1], [j0, j1], [k0, k1]]"
    try:
        flat = list(roi)
        if len(flat) == 6 and not any(isinstance(v, (list, tuple)) for v in flat):
            flat = [flat[0:2], flat[2:4], flat[4:6]]
        pairs = [sorted(round(float(v)) for v in p) for p in flat]
    except (TypeError, ValueError, OverflowError):
        raise PromptError(f"{usage}, got {roi!r}") from None
    if len(pairs) != 3 or any(len(p) != 2 for p in pairs):
        raise PromptError(f"{usage}, got {roi!r}")
    shape = vol.shape
    lo = [min(max(p[0], 0), n - 1) for p, n in zip(pairs, shape, strict=True)]
    hi = [min(max(p[1], 0), n - 1) for p, n in zip(pairs, shape, strict=True)]
    a, b = to_canonical(vol, lo), to_canonical(vol, hi)
    return Roi((min(a[0], b[0]), min(a[1], b[1]), min(a[2], b[2])),
               (max(a[0], b[0]), max(a[1], b[1]), max(a[2], b[2])))


def plan(fg: list[tuple[int, int, int]], bg: list[tuple[int, int, int]], roi: Roi | None,
         three_d: bool, object_id: int) -> Step:
    """The one segloop step for a MONAI Label deepgrow request that starts the object afresh
    (canonical indices): a ``segment`` task that clears the object and segments it again.

    The anchor slice is the first foreground click's (inside the ROI when there is one), else
    the ROI's middle slice; it gets the ROI's box and the clicks on it. In 3D the mask is then
    propagated and every other clicked slice becomes a refinement; in 2D only that slice is
    segmented."""
    if roi is None and not fg:
        raise PromptError("give at least one foreground point or a roi")
    inside = [p for p in fg if roi is None or roi.contains_z(p[2])]
    if inside:
        z = inside[0][2]
    elif roi is not None:
        z = (roi.lo[2] + roi.hi[2]) // 2
    else:  # pragma: no cover - fg is non-empty when roi is None
        z = fg[0][2]

    def on(zz: int) -> tuple[list[list[int]], list[int]]:
        pts = [[p[0], p[1]] for p in fg if p[2] == zz] + [[p[0], p[1]] for p in bg if p[2] == zz]
        labels = [1] * sum(p[2] == zz for p in fg) + [0] * sum(p[2] == zz for p in bg)
        return pts, labels

    pts, labels = on(z)
    params: dict[str, Any] = {"slice_index": z, "object_id": object_id, "points": pts,
                              "point_labels": labels, "clear": True, "propagate": three_d,
                              "refine": []}
    if roi is not None:
        params["box"] = [roi.lo[0], roi.lo[1], roi.hi[0], roi.hi[1]]
    if three_d:
        for zz in sorted({p[2] for p in fg + bg} - {z}):
            p2, l2 = on(zz)
            params["refine"].append({"slice_index": zz, "points": p2, "point_labels": l2})
    return Step(StepKind.SEGMENT, params)


def write_result(mask: npt.NDArray[np.bool_], vol: Volume, dest_dir: Path, stem: str,
                 extension: str = ".nii.gz", dtype: str = "uint8", compress: bool = True
                 ) -> Path:
    """Write a canonical ``(X, Y, Z)`` mask (values 0/1) on the upload's grid as
    ``dest_dir/stem+extension`` in ``dtype``; NRRD/MHA are compressed unless ``compress`` is
    False (a .nii.gz always is). Returns the path."""
    from segloop.io import save_mask

    ext = extension if extension.startswith(".") else f".{extension}"
    if ext not in RESULT_EXTENSIONS:
        raise InputError(f"result_extension {extension!r} is not offered; use one of "
                         f"{', '.join(RESULT_EXTENSIONS)}")
    if dtype not in RESULT_DTYPES:
        raise InputError(f"result_dtype {dtype!r} is not offered; use one of "
                         f"{', '.join(RESULT_DTYPES)}")
    path = dest_dir / f"{stem}{ext}"
    # a throwaway file (sent, then deleted): no fsync; NRRD/MHA written compressed or not
    save_mask(np.asarray(mask, np.uint8), vol, path, compress=compress, durable=False)
    if ext.endswith(".nrrd") or ext == ".mha":
        if dtype != "uint8":
            import SimpleITK as sitk

            simg = sitk.ReadImage(str(path))
            simg = sitk.Cast(simg, sitk.GetImageFromArray(np.zeros((2, 2), dtype)).GetPixelID())
            sitk.WriteImage(simg, str(path), compress)
    elif dtype != "uint8":
        import nibabel as nib

        img: Any = nib.load(str(path))
        data = np.asarray(img.dataobj).astype(dtype)
        out = nib.Nifti1Image(data, img.affine, header=img.header)
        out.header.set_data_dtype(data.dtype)
        nib.save(out, str(path))
    return path
