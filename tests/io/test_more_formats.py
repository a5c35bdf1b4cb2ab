"""Every 3D scalar format SimpleITK or nibabel reads is read on the command line (issue 9 item
13): ITK-SNAP GIPL, VTK, MINC, Analyze, NIfTI pairs, detached MetaImage / NRRD headers, 3D TIFF,
FreeSurfer MGH; geometry checked against SimpleITK (nibabel for what SimpleITK does not read)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from segloop.errors import InputError, UnsupportedFormatError
from segloop.io import detect_format, load_volume


def _sitk_affine(img: sitk.Image) -> np.ndarray:
    d = np.asarray(img.GetDirection()).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = d * np.asarray(img.GetSpacing())
    lps[:3, 3] = img.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _image(dtype: type = np.int16) -> sitk.Image:
    arr = (np.arange(6 * 5 * 4).reshape(4, 5, 6) * 7 - 200).astype(dtype)  # (z, y, x)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.75, 0.9, 2.5))
    img.SetOrigin((12.5, -40.0, 7.25))
    return img


@pytest.mark.parametrize(("ext", "fmt"), [
    ("gipl", "gipl"), ("gipl.gz", "gipl-gz"), ("vtk", "vtk"), ("mnc", "minc"),
    ("hdr", "nifti"), ("mhd", "mha"), ("nhdr", "nrrd"), ("tif", "tiff"), ("mrc", "mrc"),
])
def test_formats_match_simpleitk(tmp_path: Path, ext: str, fmt: str) -> None:
    p = tmp_path / f"scan.{ext}"
    dtype = np.uint16 if ext in ("tif",) else np.int16
    sitk.WriteImage(_image(dtype), str(p))
    ref = sitk.ReadImage(str(p))
    vol = load_volume(p)
    assert vol.source_format == fmt
    np.testing.assert_array_equal(vol.data, sitk.GetArrayFromImage(ref).transpose(2, 1, 0))
    if ext != "tif":  # TIFF keeps no origin/direction: both read the same defaults anyway
        np.testing.assert_allclose(vol.affine, _sitk_affine(ref), atol=1e-5)


def test_analyze_matches_simpleitk(tmp_path: Path) -> None:
    arr = (np.arange(6 * 5 * 4).reshape(6, 5, 4) * 3).astype(np.int16)
    nib.save(nib.AnalyzeImage(arr, np.diag([2.0, 3.0, 4.0, 1.0])), tmp_path / "a.hdr")
    assert detect_format(tmp_path / "a.hdr") == "analyze"
    vol = load_volume(tmp_path / "a.hdr")
    ref = sitk.ReadImage(str(tmp_path / "a.hdr"))
    assert vol.source_format == "analyze"
    np.testing.assert_array_equal(vol.data, sitk.GetArrayFromImage(ref).transpose(2, 1, 0))
    np.testing.assert_allclose(np.abs(vol.spacing), [2.0, 3.0, 4.0])
    # an Analyze header not named .hdr cannot find its .img: said plainly
    (tmp_path / "a.hdr").rename(tmp_path / "header")
    with pytest.raises(InputError, match=r"name it NAME\.hdr"):
        load_volume(tmp_path / "header")


def test_mgz_read_through_nibabel(tmp_path: Path) -> None:
    arr = (np.arange(6 * 5 * 4).reshape(6, 5, 4)).astype(np.float32)
    aff = np.array([[-1.0, 0, 0, 10], [0, 0, 1.5, -5], [0, -1.2, 0, 3], [0, 0, 0, 1]])
    nib.save(nib.MGHImage(arr, aff), tmp_path / "brain.mgz")
    vol = load_volume(tmp_path / "brain.mgz")
    assert vol.source_format == "nibabel"
    np.testing.assert_array_equal(vol.data, arr)
    np.testing.assert_allclose(vol.affine, aff, atol=1e-5)


def test_cli_reads_detached_headers_anywhere(tmp_path: Path) -> None:
    """On the user's own files a header may name a data file in another folder."""
    sitk.WriteImage(_image(), str(tmp_path / "scan.nhdr"))
    (tmp_path / "data").mkdir()
    (tmp_path / "scan.raw").rename(tmp_path / "data" / "voxels.raw")
    (tmp_path / "hdr").mkdir()
    text = (tmp_path / "scan.nhdr").read_text(encoding="utf-8").replace("data file: scan.raw",
                                                        "data file: ../data/voxels.raw")
    (tmp_path / "hdr" / "scan.nhdr").write_text(text)
    vol = load_volume(tmp_path / "hdr" / "scan.nhdr")
    assert vol.shape == (6, 5, 4)
    # the service's reader option refuses the same header
    with pytest.raises(InputError, match="not part of the upload"):
        load_volume(tmp_path / "hdr" / "scan.nhdr", data_root=tmp_path / "hdr")


def test_decoded_byte_limit_from_header(tmp_path: Path) -> None:
    sitk.WriteImage(_image(), str(tmp_path / "scan.gipl"))
    with pytest.raises(InputError, match="decoded"):
        load_volume(tmp_path / "scan.gipl", max_bytes=6 * 5 * 4 * 2 - 1)
    assert load_volume(tmp_path / "scan.gipl", max_bytes=6 * 5 * 4 * 2).shape == (6, 5, 4)


def test_unreadable_still_refused(tmp_path: Path) -> None:
    p = tmp_path / "notes.mgz"
    p.write_bytes(b"hello, this is a note\n")
    with pytest.raises(UnsupportedFormatError, match="text file"):
        load_volume(p)


def test_cli_info_reads_gipl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from segloop.cli import info

    sitk.WriteImage(_image(), str(tmp_path / "seg.gipl.gz"))
    parser = argparse.ArgumentParser()
    info.register(parser.add_subparsers())
    args = parser.parse_args(["info", str(tmp_path / "seg.gipl.gz")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "gipl-gz" in out and "6x5x4" in out


def test_a_vtk_read_keeps_the_process_locale(tmp_path: Path) -> None:
    # ITK's VTK reader switches the whole process to LC_ALL=C (Python's default text encoding
    # becomes ASCII): segloop's read must leave the locale as it found it
    import locale

    p = tmp_path / "scan.vtk"
    sitk.WriteImage(_image(), str(p))
    before = locale.setlocale(locale.LC_ALL)
    load_volume(p)
    assert locale.setlocale(locale.LC_ALL) == before
