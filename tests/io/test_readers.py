"""load_volume on every format, sniffed from content, with geometry checked independently."""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from segloop.io import detect_format, list_dicom_series, load_volume

WriteSeries = Callable[..., list[Path]]


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray, descrip: str = "") -> Path:
    img = nib.Nifti1Image(data, affine)
    if descrip:
        img.header["descrip"] = descrip.encode()
    nib.save(img, str(path))
    return path


def _sitk_affine(img: sitk.Image) -> np.ndarray:
    d = np.asarray(img.GetDirection()).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = d * np.asarray(img.GetSpacing())
    lps[:3, 3] = img.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def test_nifti_keeps_array_affine_and_header(tmp_path: Path) -> None:
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 1000
    aff = np.diag([-1.5, 2.0, 3.0, 1.0])
    aff[:3, 3] = [10, -20, 30]
    p = _nifti(tmp_path / "ct.nii.gz", data, aff, descrip="CT abdomen")
    vol = load_volume(p)
    assert vol.source_format == "nifti"
    assert np.array_equal(vol.data, data)
    assert np.allclose(vol.affine, aff)
    assert vol.spacing == pytest.approx((1.5, 2.0, 3.0))
    assert vol.orientation == "LAS"
    assert vol.modality == "CT" and vol.meta["modality_source"] == "header"
    assert isinstance(vol.header, nib.Nifti1Header)


def test_format_is_sniffed_not_taken_from_the_name(tmp_path: Path) -> None:
    p = _nifti(tmp_path / "x.nii.gz", np.zeros((3, 3, 3), np.float32), np.eye(4))
    odd = tmp_path / "scan.dat"
    shutil.copy(p, odd)
    assert detect_format(odd) == "nifti"
    assert load_volume(odd).shape == (3, 3, 3)
    nrrd = tmp_path / "a.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 3, 2), np.int16)), str(nrrd))
    renamed = tmp_path / "a.bin"
    shutil.copy(nrrd, renamed)
    assert detect_format(renamed) == "nrrd"
    assert load_volume(renamed).shape == (2, 3, 4)


def test_trailing_singleton_fourth_dim_is_squeezed(tmp_path: Path) -> None:
    p = _nifti(tmp_path / "v.nii", np.ones((3, 4, 5, 1), np.float32), np.eye(4))
    assert load_volume(p).shape == (3, 4, 5)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd"])
def test_itk_formats_convert_lps_to_ras(tmp_path: Path, suffix: str) -> None:
    arr_zyx = np.random.default_rng(0).integers(0, 500, (4, 5, 6)).astype(np.int16)
    img = sitk.GetImageFromArray(arr_zyx)
    img.SetSpacing((0.5, 0.75, 2.0))
    img.SetOrigin((12.0, -7.0, 3.0))
    img.SetDirection((0, 0, 1, 1, 0, 0, 0, 1, 0))  # oblique-free but permuted axes
    p = tmp_path / f"img{suffix}"
    sitk.WriteImage(img, str(p))
    vol = load_volume(p)
    assert vol.source_format in ("nrrd", "mha")
    assert np.array_equal(vol.data, arr_zyx.transpose(2, 1, 0))
    assert np.allclose(vol.affine, _sitk_affine(img))
    # voxel (1, 2, 3) lands where ITK puts it (LPS -> RAS flips x and y)
    lps = np.asarray(img.TransformIndexToPhysicalPoint((1, 2, 3)))
    assert np.allclose((vol.affine @ [1, 2, 3, 1])[:3], lps * [-1, -1, 1])


def test_npz_with_affine_spacing_or_nothing(tmp_path: Path) -> None:
    data = np.random.default_rng(1).random((3, 4, 5)).astype(np.float32)
    aff = np.diag([2.0, 2.0, 4.0, 1.0])
    np.savez(tmp_path / "a.npz", image=data, affine=aff)
    np.savez(tmp_path / "b.npz", vol=data, spacing=np.array([1.0, 2.0, 3.0]))
    np.savez_compressed(tmp_path / "c.npz", data)
    np.save(tmp_path / "d.npy", data)
    a = load_volume(tmp_path / "a.npz")
    assert np.array_equal(a.data, data) and np.allclose(a.affine, aff)
    assert load_volume(tmp_path / "b.npz").spacing == pytest.approx((1.0, 2.0, 3.0))
    c = load_volume(tmp_path / "c.npz")
    assert np.allclose(c.affine, np.eye(4)) and "identity" in c.meta["affine_source"]
    assert load_volume(tmp_path / "d.npy").source_format == "npy"


def test_modality_guess_is_marked(tmp_path: Path) -> None:
    ct = np.full((4, 4, 4), -1024, np.int16)
    ct[1:3, 1:3, 1:3] = 40
    v = load_volume(_nifti(tmp_path / "ct.nii.gz", ct, np.eye(4)))
    assert v.modality == "CT" and v.meta["modality_source"].startswith("guess")
    mr = np.random.default_rng(0).random((4, 4, 4)).astype(np.float32) * 800
    assert load_volume(_nifti(tmp_path / "mr.nii.gz", mr, np.eye(4))).modality == "MR"


def test_dicom_series_folder_zip_and_single_file(tmp_path: Path, dicom_series: WriteSeries) -> None:
    files = dicom_series(tmp_path / "s", n=4, slope=2.0, intercept=-1000.0)
    vol = load_volume(tmp_path / "s")
    assert vol.source_format == "dicom" and vol.modality == "CT"
    assert vol.shape == (5, 6, 4)  # (columns, rows, slices)
    assert vol.dicom is not None and list(vol.dicom.files) == files
    raw = np.arange(30).reshape(6, 5)
    for k in range(4):  # sorted along the normal, rescaled, (rows, cols) -> (i=col, j=row)
        assert np.allclose(vol.data[:, :, k], ((k * 100 + raw) * 2.0 - 1000.0).T)
    # the affine agrees with SimpleITK's (GDCM) reading of the same series
    r = sitk.ImageSeriesReader()
    r.SetFileNames(r.GetGDCMSeriesFileNames(str(tmp_path / "s")))
    ref = r.Execute()
    assert np.allclose(vol.affine, _sitk_affine(ref), atol=1e-5)
    zpath = tmp_path / "series.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in files:
            zf.write(f, f"nested/{f.name}")
    zvol = load_volume(zpath)
    assert np.array_equal(zvol.data, vol.data) and np.allclose(zvol.affine, vol.affine)
    assert zvol.dicom is not None and str(zvol.dicom.files[0]).startswith(str(zpath))
    one = load_volume(files[2])
    assert one.shape == vol.shape  # one file selects its whole series
    infos = list_dicom_series(tmp_path / "s")
    assert len(infos) == 1 and infos[0].n_images == 4 and infos[0].modality == "CT"


def test_dicom_oblique_orientation_matches_gdcm(tmp_path: Path, dicom_series: WriteSeries) -> None:
    c, s = np.cos(0.3), np.sin(0.3)
    iop = (c, s, 0.0, 0.0, 0.0, -1.0)  # coronal-ish, rotated in plane
    dicom_series(tmp_path / "o", n=3, iop=iop)
    vol = load_volume(tmp_path / "o")
    r = sitk.ImageSeriesReader()
    r.SetFileNames(r.GetGDCMSeriesFileNames(str(tmp_path / "o")))
    ref = r.Execute()
    assert np.allclose(vol.affine, _sitk_affine(ref), atol=1e-4)
    assert np.array_equal(vol.data, sitk.GetArrayFromImage(ref).transpose(2, 1, 0))


def test_nrrd_detached_header_and_header_modality(tmp_path: Path) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    (tmp_path / "v.raw").write_bytes(arr.astype("<i2").tobytes(order="F"))
    (tmp_path / "v.nhdr").write_text(
        "NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\n"
        "sizes: 2 3 4\nspace directions: (1,0,0) (0,1,0) (0,0,2)\nendian: little\n"
        "encoding: raw\nspace origin: (0,0,0)\nmodality:=MR\ndata file: v.raw\n"
    )
    vol = load_volume(tmp_path / "v.nhdr")
    assert vol.source_format == "nrrd" and vol.shape == (2, 3, 4)
    assert np.array_equal(vol.data, arr) and vol.orientation == "LPS"
    assert vol.modality == "MR" and vol.meta["modality_source"] == "header"


def test_scaled_nifti_is_float32(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.arange(8, dtype=np.int16).reshape(2, 2, 2), np.eye(4))
    img.header.set_slope_inter(0.5, 10)
    nib.save(img, str(tmp_path / "s.nii"))
    vol = load_volume(tmp_path / "s.nii")
    assert vol.data.dtype == np.float32 and vol.data[1, 1, 1] == pytest.approx(13.5)
