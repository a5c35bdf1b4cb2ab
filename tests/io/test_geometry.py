"""Canonical views, writing masks on the source grid, and moving labels between grids."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from segloop.errors import InputError
from segloop.io import (
    Volume,
    load_label,
    load_volume,
    resample_to,
    save_mask,
    save_volume_nifti,
)

WriteSeries = Callable[..., list[Path]]


def _oblique_lps_affine() -> np.ndarray:
    """LPS-ordered axes, 10 degrees of rotation about z, anisotropic voxels."""
    t = np.deg2rad(10)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([-0.9, -0.8, 2.5])
    aff[:3, 3] = [40.0, 30.0, -20.0]
    return aff


def test_canonical_view_of_oblique_lps_nifti(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 100, (6, 7, 8)).astype(np.int16)
    aff = _oblique_lps_affine()
    nib.save(nib.Nifti1Image(data, aff), str(tmp_path / "lps.nii.gz"))
    vol = load_volume(tmp_path / "lps.nii.gz")
    assert vol.orientation == "LPS" and not vol.is_canonical()
    can = vol.canonical()
    assert can.orientation == "RAS" and can.shape == (6, 7, 8)
    ref = nib.as_closest_canonical(nib.load(str(tmp_path / "lps.nii.gz")))
    assert np.array_equal(can.data, np.asanyarray(ref.dataobj))
    assert np.allclose(can.affine, ref.affine)
    # same voxel, same place: canonical index (x, y, z) <-> source (5-x, 6-y, z)
    src_ijk = np.array([5 - 1, 6 - 2, 3, 1])
    assert np.allclose(can.affine @ [1, 2, 3, 1], vol.affine @ src_ijk)
    assert can.data[1, 2, 3] == vol.data[4, 4, 3]
    assert np.array_equal(vol.canonical_to_source(can.data), vol.data)


def _random_mask(shape: tuple[int, int, int]) -> np.ndarray:
    return (np.random.default_rng(3).random(shape) > 0.7).astype(np.uint8)


def test_save_mask_nifti_keeps_source_grid_and_header(tmp_path: Path) -> None:
    data = np.zeros((6, 7, 8), np.float32)
    img = nib.Nifti1Image(data, _oblique_lps_affine())
    img.set_qform(_oblique_lps_affine(), code=1)
    img.set_sform(_oblique_lps_affine(), code=4)
    nib.save(img, str(tmp_path / "in.nii.gz"))
    vol = load_volume(tmp_path / "in.nii.gz")
    mask = _random_mask(vol.canonical().shape)
    out = save_mask(mask, vol, tmp_path / "out" / "mask.nii.gz")
    back = nib.load(str(out))
    src_hdr = nib.load(str(tmp_path / "in.nii.gz")).header
    assert back.shape == vol.shape and back.get_data_dtype() == np.uint8
    for key in ("qform_code", "sform_code", "srow_x", "srow_y", "srow_z", "quatern_b", "pixdim"):
        assert np.array_equal(back.header[key], src_hdr[key]), key
    assert np.array_equal(np.asanyarray(back.dataobj), vol.canonical_to_source(mask))
    assert np.array_equal(load_volume(out).canonical().data, mask)
    assert not list((tmp_path / "out").glob(".tmp-*"))  # atomic write left no temp file


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_save_mask_round_trip_itk_input(tmp_path: Path, suffix: str) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.zeros((5, 6, 7), np.int16))
    img.SetSpacing((0.7, 0.8, 3.0))
    img.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))
    img.SetOrigin((5.0, 6.0, 7.0))
    sitk.WriteImage(img, str(tmp_path / f"in{suffix}"))
    vol = load_volume(tmp_path / f"in{suffix}")
    mask = _random_mask(vol.canonical().shape)
    for out_suffix in (".nii.gz", suffix):
        out = load_volume(save_mask(mask, vol, tmp_path / f"mask{out_suffix}"))
        assert out.shape == vol.shape
        assert np.allclose(out.affine, vol.affine, atol=1e-6)
        assert np.array_equal(out.canonical().data, mask)


def test_save_mask_for_dicom_places_voxels_like_dicom(tmp_path: Path, dicom_series: WriteSeries) -> None:
    files = dicom_series(tmp_path / "s", n=4, iop=(0, 1, 0, 0, 0, -1))
    vol = load_volume(tmp_path / "s")
    mask = _random_mask(vol.canonical().shape)
    out = save_mask(mask, vol, tmp_path / "m.nii.gz")
    img = nib.load(str(out))
    assert img.shape == vol.shape
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ipp = np.array([float(v) for v in ds.ImagePositionPatient]) * [-1, -1, 1]
        assert np.allclose(img.affine @ [0, 0, k, 1], [*ipp, 1], atol=1e-4)
        # pixel (row r, col c) of slice k is voxel (c, r, k)
        r, c = 2, 3
        rowdir = np.array([float(v) for v in ds.ImageOrientationPatient[:3]])
        coldir = np.array([float(v) for v in ds.ImageOrientationPatient[3:]])
        sp = [float(v) for v in ds.PixelSpacing]
        lps = ipp * [-1, -1, 1] + c * sp[1] * rowdir + r * sp[0] * coldir
        assert np.allclose(img.affine @ [c, r, k, 1], [*(lps * [-1, -1, 1]), 1], atol=1e-4)
    assert np.array_equal(np.asanyarray(img.dataobj), vol.canonical_to_source(mask))


def test_shared_dicom_mask_affine_matches_image_positions(tmp_path: Path, shared: Path) -> None:
    vol = load_volume(shared / "totalseg" / "example_ct_dicom")
    assert vol.dicom is not None
    out = nib.load(str(save_mask(np.zeros(vol.canonical().shape, np.uint8), vol, tmp_path / "m.nii")))
    assert out.shape == vol.shape
    for k, f in enumerate(vol.dicom.files):
        ipp = np.array([float(v) for v in pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient])
        assert np.allclose(out.affine @ [0, 0, k, 1], [*(ipp * [-1, -1, 1]), 1], atol=1e-3)


def test_save_mask_rejects_wrong_shape_and_suffix(tmp_path: Path) -> None:
    vol = Volume(data=np.zeros((3, 4, 5), np.int16), affine=np.eye(4), source_format="npz")
    with pytest.raises(InputError, match="expected the canonical grid"):
        save_mask(np.zeros((3, 4, 6), np.uint8), vol, tmp_path / "m.nii.gz")
    with pytest.raises(InputError, match="unsupported output file type"):
        save_mask(np.zeros((3, 4, 5), np.uint8), vol, tmp_path / "m.png")
    out = save_mask(np.ones((3, 4, 5), bool), vol, tmp_path / "m.npz")
    assert load_volume(out).data.sum() == 60


def test_save_volume_nifti_serves_canonical_grid(tmp_path: Path) -> None:
    data = np.arange(6 * 7 * 8, dtype=np.int16).reshape(6, 7, 8)
    vol = Volume(data=data, affine=_oblique_lps_affine(), source_format="npz", modality="CT")
    can = vol.canonical()
    back = load_volume(save_volume_nifti(can, tmp_path / "c.nii.gz"))
    assert back.is_canonical() and np.array_equal(back.data, can.data)
    assert np.allclose(back.affine, can.affine, atol=1e-5) and back.data.dtype == np.int16


def test_resample_to_exact_under_flips_and_permutations() -> None:
    rng = np.random.default_rng(5)
    data = rng.integers(0, 5, (4, 5, 6)).astype(np.uint8)
    aff = np.diag([2.0, 3.0, 4.0, 1.0])
    aff[:3, 3] = [1, 2, 3]
    ref = Volume(data=data, affine=aff, source_format="npz")
    # moving: the same image stored y-flipped and with axes permuted (k, i, j)
    flip = data[:, ::-1, :]
    perm = np.ascontiguousarray(flip.transpose(2, 0, 1))
    m_aff = np.zeros((4, 4))
    m_aff[:3, 0] = aff[:3, 2]
    m_aff[:3, 1] = aff[:3, 0]
    m_aff[:3, 2] = -aff[:3, 1]
    m_aff[:3, 3] = aff[:3, 3] + 4 * aff[:3, 1]
    m_aff[3, 3] = 1
    moving = Volume(data=perm, affine=m_aff, source_format="npz")
    assert np.array_equal(resample_to(moving, ref), data)
    # a shifted reference: voxels outside the moving image are 0
    shifted = Volume(data=data, affine=aff @ _translate(2, 0, 0), source_format="npz")
    out = resample_to(moving, shifted)
    assert np.array_equal(out[:2], data[2:]) and not out[2:].any()


def _translate(x: float, y: float, z: float) -> np.ndarray:
    t = np.eye(4)
    t[:3, 3] = [x, y, z]
    return t


def test_resample_to_general_affine_nearest() -> None:
    data = np.zeros((10, 10, 10), np.uint8)
    data[2:8, 2:8, 2:8] = 1
    mov = Volume(data=data, affine=np.diag([2.0, 2.0, 2.0, 1.0]), source_format="npz")
    ref = Volume(data=np.zeros((20, 20, 20), np.uint8), affine=np.eye(4), source_format="npz")
    out = resample_to(mov, ref)
    assert out.shape == (20, 20, 20) and out.dtype == np.uint8
    # moving voxels 2..7 (centres 4..14 mm) cover 3..15 mm; ties at the edges may go either way
    assert out[4:15, 4:15, 4:15].all() and not out[:3].any() and not out[16:].any()
    assert 11**3 <= out.sum() <= 13**3


def test_load_label_value_and_any(tmp_path: Path) -> None:
    lab = np.zeros((4, 5, 6), np.uint8)
    lab[1, 1, 1] = 3
    lab[2, 2, 2] = 5
    aff = np.diag([-1.0, 1.0, 1.0, 1.0])  # LAS storage
    nib.save(nib.Nifti1Image(lab, aff), str(tmp_path / "lab.nii.gz"))
    ref = Volume(data=np.zeros((4, 5, 6), np.int16), affine=aff, source_format="nifti")
    m3 = load_label(tmp_path / "lab.nii.gz", ref, 3)
    assert m3.dtype == bool and m3.sum() == 1 and m3[4 - 1 - 1, 1, 1]
    assert load_label(tmp_path / "lab.nii.gz", ref, "any").sum() == 2
    with pytest.raises(InputError, match="integer or 'any'"):
        load_label(tmp_path / "lab.nii.gz", ref, "liver")


def test_canonical_shape_without_moving_voxels() -> None:
    for aff in (
        np.eye(4),
        _oblique_lps_affine(),
        np.array([[0, 0, 2, 0], [0, -1, 0, 0], [3, 0, 0, 0], [0, 0, 0, 1.0]]),
    ):
        vol = Volume(data=np.zeros((2, 3, 4), np.uint8), affine=aff, source_format="npz")
        assert vol.canonical_shape == vol.canonical().shape
