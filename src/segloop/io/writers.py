"""Write masks on the source grid, serve volumes as NIfTI, and move labels between grids.

``save_mask`` takes a mask on the canonical grid (``Volume.canonical()``) and writes it on
exactly the SOURCE grid: same shape and affine as the input file (for NIfTI input also the
same qform/sform codes and pixdim). Writes are atomic and durable: a temp file in the target
folder is flushed and renamed over the destination (``atomic_path``, from :mod:`segloop.fsio`).
``resample_to`` / ``load_label`` compare images stored on different grids of the same physical
space (nearest neighbour in physical space; exact when
the grids differ only by axis flips/permutations). Must not import torch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
import numpy.typing as npt

from segloop.errors import InputError
from segloop.fsio import atomic_path
from segloop.io.readers import load_volume
from segloop.io.volume import Volume

__all__ = [
    "MASK_SUFFIXES",
    "atomic_path",
    "load_label",
    "resample_to",
    "save_mask",
    "save_volume_nifti",
]

log = logging.getLogger(__name__)

#: output suffixes save_mask understands
MASK_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".npz")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_NIFTI_GEOMETRY_FIELDS = (
    "qform_code",
    "sform_code",
    "quatern_b",
    "quatern_c",
    "quatern_d",
    "qoffset_x",
    "qoffset_y",
    "qoffset_z",
    "srow_x",
    "srow_y",
    "srow_z",
    "pixdim",
    "xyzt_units",
)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in MASK_SUFFIXES:
        if name.endswith(s):
            return s
    raise InputError(f"{path}: unsupported output file type; use one of {', '.join(MASK_SUFFIXES)}")


def _as_mask(mask: npt.NDArray[Any], want: tuple[int, ...]) -> npt.NDArray[np.uint8]:
    arr = np.asarray(mask)
    if arr.shape != want:
        raise InputError(f"mask has shape {arr.shape}, expected the canonical grid {want}")
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise InputError("mask values must be in 0..255 (uint8 label map)")
        arr = arr.astype(np.uint8)
    return arr


def _nifti_image(
    data: npt.NDArray[Any], affine: npt.NDArray[np.float64], header: Any = None
) -> nib.Nifti1Image:
    if isinstance(header, nib.Nifti1Header):  # also Nifti2Header (a subclass)
        cls: Any = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        hdr = header.copy()
        img: nib.Nifti1Image = cls(data, affine, header=hdr)
        for key in _NIFTI_GEOMETRY_FIELDS:
            img.header[key] = header[key]
        img.header.set_data_shape(data.shape)
        img.header.set_data_dtype(data.dtype)
        img.header.set_slope_inter(1.0, 0.0)
        img.header["cal_min"] = 0
        img.header["cal_max"] = 0
        return img
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(data.dtype)
    img.set_sform(affine, code=1)
    rot = affine[:3, :3] / np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    orthogonal = np.allclose(rot.T @ rot, np.eye(3), atol=1e-4)
    img.set_qform(affine, code=1 if orthogonal else 0)
    img.header.set_xyzt_units("mm", "sec")
    return img


def _write_itk(data: npt.NDArray[Any], affine: npt.NDArray[np.float64], path: Path,
               compress: bool = True) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    lps = _LPS_TO_RAS @ affine
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(v) for v in (lps[:3, :3] / spacing[None, :]).reshape(-1)])
    img.SetOrigin([float(v) for v in lps[:3, 3]])
    sitk.WriteImage(img, str(path), compress)


def save_mask(mask: npt.NDArray[Any], volume: Volume, path: str | Path, *,
              compress: bool = True, durable: bool = True) -> Path:
    """Write a mask on the SOURCE grid of ``volume``; returns the written path.

    mask: uint8 (or bool) label map ``(X, Y, Z)`` on ``volume.canonical()``'s grid.
    path: ``.nii``/``.nii.gz`` (default choice; same qform/sform as a NIfTI source, the
        exact RAS affine otherwise), ``.nrrd``/``.mha``/``.mhd`` (LPS geometry), or
        ``.npz`` (arrays ``image`` and ``affine``). The file is written atomically.
        (.mhd is not offered: its separate data file cannot be renamed atomically.)
    compress: .nrrd/.mha data compressed (gzip) or raw. durable: False skips the fsyncs
        (a throwaway file, e.g. a protocol result that is sent and deleted).
    """
    dest = Path(path)
    suffix = _suffix(dest)
    arr = _as_mask(mask, volume.canonical_shape)
    src = np.ascontiguousarray(volume.canonical_to_source(arr))
    with atomic_path(dest, durable=durable) as tmp:
        if suffix in (".nii", ".nii.gz"):
            header = volume.header if volume.source_format == "nifti" else None
            img = _nifti_image(src, volume.affine, header)
            img.header["descrip"] = b"segloop mask"
            nib.save(img, str(tmp))
        elif suffix == ".npz":  # np.savez adds .npz to names lacking it; pass a handle
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, image=src, affine=volume.affine)
        else:
            _write_itk(src, volume.affine, tmp, compress)
    log.debug("wrote mask %s shape=%s", dest, src.shape)
    return dest


def save_volume_nifti(volume: Volume, path: str | Path) -> Path:
    """Write ``volume.data`` with ``volume.affine`` as NIfTI (qform = sform, code 1), atomically.

    Used to serve the canonical grid: pass ``volume.canonical()``. Keeps the dtype
    (bool becomes uint8).
    """
    dest = Path(path)
    if not dest.name.lower().endswith((".nii", ".nii.gz")):
        raise InputError(f"{dest}: a NIfTI path must end with .nii or .nii.gz")
    data = volume.data.astype(np.uint8) if volume.data.dtype == np.bool_ else volume.data
    with atomic_path(dest) as tmp:
        img = _nifti_image(np.ascontiguousarray(data), volume.affine)
        if volume.modality:
            img.header["descrip"] = f"segloop {volume.modality}".encode()[:80]
        nib.save(img, str(tmp))
    return dest


def _signed_permutation(
    m: npt.NDArray[np.float64],
) -> tuple[list[int], list[int], npt.NDArray[np.int64]] | None:
    """(perm, signs, offset) when ``m`` maps voxel to voxel by flips/permutations only."""
    r = np.round(m)
    if not np.allclose(m, r, atol=1e-3):
        return None
    rot = r[:3, :3]
    if not np.all(np.abs(rot).sum(axis=0) == 1) or not np.all(np.abs(rot).sum(axis=1) == 1):
        return None
    perm = [int(np.flatnonzero(rot[:, a])[0]) for a in range(3)]
    signs = [int(rot[perm[a], a]) for a in range(3)]
    return perm, signs, r[:3, 3].astype(np.int64)


def resample_to(moving: Volume, reference: Volume, order: int = 0) -> npt.NDArray[Any]:
    """``moving``'s voxels sampled on ``reference``'s SOURCE grid (shape ``reference.shape``).

    Nearest neighbour (order 0) in physical space by default; voxels outside ``moving`` are 0.
    Exact (pure indexing) when the two grids differ only by flips, permutations and integer
    shifts. The dtype of ``moving.data`` is kept for order 0, float32 otherwise.
    """
    vox2vox = np.linalg.inv(moving.affine) @ reference.affine
    shape = reference.shape
    sp = _signed_permutation(vox2vox)
    if sp is not None and order == 0:
        perm, signs, offset = sp
        out = np.zeros(shape, dtype=moving.data.dtype)
        src_idx: list[npt.NDArray[np.int64]] = []
        dst_idx: list[npt.NDArray[np.int64]] = []
        for a in range(3):
            r = np.arange(shape[a])
            m = signs[a] * r + offset[perm[a]]
            ok = (m >= 0) & (m < moving.shape[perm[a]])
            src_idx.append(m[ok])
            dst_idx.append(r[ok])
        if all(len(i) for i in src_idx):
            moved = moving.data.transpose(perm)
            out[np.ix_(*dst_idx)] = moved[np.ix_(*src_idx)]
        return out
    from scipy import ndimage

    data = moving.data if order == 0 else moving.data.astype(np.float32)
    return np.asarray(
        ndimage.affine_transform(
            data,
            vox2vox[:3, :3],
            offset=vox2vox[:3, 3],
            output_shape=shape,
            order=order,
            mode="constant",
            cval=0,
        )
    )


def load_label(
    path: str | Path, reference: Volume, label_value: int | str | Literal["any"]
) -> npt.NDArray[np.bool_]:
    """Target mask ``label == label_value`` (or ``label > 0`` for ``"any"``) from a label file,
    moved into physical alignment with ``reference`` and returned on its CANONICAL grid
    (bool, shape ``reference.canonical().shape``)."""
    lab = load_volume(path)
    if isinstance(label_value, str) and label_value.strip().lower() == "any":
        target = lab.data > 0
    else:
        try:
            value = int(label_value)
        except ValueError as exc:
            raise InputError(f"label_value must be an integer or 'any', got {label_value!r}") from exc
        target = lab.data == value
    moving = Volume(data=target.astype(np.uint8), affine=lab.affine, source_format=lab.source_format)
    on_ref = resample_to(moving, reference, order=0)
    return np.asarray(reference.source_to_canonical(on_ref), dtype=bool)
