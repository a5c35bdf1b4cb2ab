"""Each kind of bad input gives a typed error with a one-line, actionable message."""

from __future__ import annotations

import gzip
import io
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from segloop.errors import InputError, UnsupportedFormatError, VolumeTooLargeError
from segloop.io import MultipleSeriesError, list_dicom_series, load_volume

WriteSeries = Callable[..., list[Path]]


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and len(msg) < 600, msg
    return msg


def _nifti(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        load_volume(tmp_path / "nope.nii.gz")
    assert "no such file" in _one_line(e)


def test_unreadable_file() -> None:
    """A file without read permission; as root (CI), checked in a child that drops to nobody."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="segloop-perm-"))  # under /tmp, traversable by anyone
    d.chmod(0o755)
    ok = _nifti(d / "ok.nii", np.zeros((2, 2, 2), np.float32))
    load_volume(ok)  # warm up lazy imports before any privilege drop
    p = _nifti(d / "x.nii", np.zeros((2, 2, 2), np.float32))
    p.chmod(0)
    try:
        if os.geteuid() != 0:
            with pytest.raises(InputError) as e:
                load_volume(p)
            assert "permission denied" in _one_line(e)
            return
        pid = os.fork()
        if pid == 0:  # child: an ordinary user, for whom mode 000 really means unreadable
            code = 5
            try:
                os.setgid(65534)
                os.setuid(65534)
                try:
                    load_volume(p)
                    code = 4
                except InputError as exc:
                    code = 0 if "permission denied" in str(exc).lower() and "\n" not in str(exc) else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "no one-line 'permission denied' error"
    finally:
        p.chmod(0o644)
        for f in d.iterdir():
            f.unlink()
        d.rmdir()


def test_unreadable_reported_even_as_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _nifti(tmp_path / "x.nii", np.zeros((2, 2, 2), np.float32))
    monkeypatch.setattr("segloop.io.sniff.os.access", lambda *_a, **_k: False)
    with pytest.raises(InputError) as e:
        load_volume(p)
    assert "permission denied" in _one_line(e)


def test_truncated_nii_gz(tmp_path: Path) -> None:
    data = np.random.default_rng(0).random((32, 32, 32)).astype(np.float32)
    p = _nifti(tmp_path / "full.nii.gz", data)
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(InputError) as e:
        load_volume(cut)
    assert "truncated" in _one_line(e)


def test_truncated_uncompressed_nii(tmp_path: Path) -> None:
    p = _nifti(tmp_path / "full.nii", np.ones((16, 16, 16), np.float32))
    cut = tmp_path / "cut.nii"
    cut.write_bytes(p.read_bytes()[:2000])
    with pytest.raises(InputError) as e:
        load_volume(cut)
    _one_line(e)


@pytest.mark.parametrize(
    ("content", "found"),
    [
        (b"hello, this is a note\n", "text file"),
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "PNG"),
        (b"", "empty file"),
    ],
)
def test_unsupported_format(tmp_path: Path, content: bytes, found: str) -> None:
    p = tmp_path / "image.nii.gz"  # the name lies; the content decides
    p.write_bytes(content)
    with pytest.raises(UnsupportedFormatError) as e:
        load_volume(p)
    msg = _one_line(e)
    assert found in msg and "NIfTI" in msg and "DICOM" in msg


def test_2d_image(tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        load_volume(_nifti(tmp_path / "flat.nii", np.zeros((8, 9), np.float32)))
    assert "2D image of shape (8, 9)" in _one_line(e)
    np.save(tmp_path / "flat.npy", np.zeros((4, 5)))
    with pytest.raises(InputError, match="2D image"):
        load_volume(tmp_path / "flat.npy")


def test_4d_image(tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        load_volume(_nifti(tmp_path / "t.nii.gz", np.zeros((4, 4, 4, 5), np.float32)))
    assert "4D image of shape (4, 4, 4, 5) with 5 frames" in _one_line(e)
    img = sitk.Image([3, 4, 5, 2], sitk.sitkInt16)
    sitk.WriteImage(img, str(tmp_path / "t.nrrd"))
    with pytest.raises(InputError, match="4D image"):
        load_volume(tmp_path / "t.nrrd")


def test_non_finite_voxels(tmp_path: Path) -> None:
    data = np.zeros((4, 4, 4), np.float32)
    data[0, 0, 0] = np.nan
    data[1, 1, 1] = np.nan
    data[2, 2, 2] = np.inf
    with pytest.raises(InputError) as e:
        load_volume(_nifti(tmp_path / "nan.nii.gz", data))
    assert "2 NaN and 1 infinite" in _one_line(e)


def test_folder_with_two_series(tmp_path: Path, dicom_series: WriteSeries) -> None:
    dicom_series(tmp_path / "d" / "a", n=3, series_uid="1.2.3.1", description="axial")
    dicom_series(tmp_path / "d" / "b", n=2, series_uid="1.2.3.2", modality="MR")
    with pytest.raises(MultipleSeriesError) as e:
        load_volume(tmp_path / "d")
    msg = _one_line(e)
    assert "2 DICOM series" in msg and "--series" in msg
    assert "1.2.3.1 ('axial', 3 images, CT)" in msg and "1.2.3.2" in msg and "MR" in msg
    assert [s.series_uid for s in e.value.series] == ["1.2.3.1", "1.2.3.2"]
    vol = load_volume(tmp_path / "d", series_uid="1.2.3.2")
    assert vol.shape[2] == 2 and vol.modality == "MR"
    assert len(list_dicom_series(tmp_path / "d")) == 2
    with pytest.raises(InputError, match=r"no series with UID 9\.9"):
        load_volume(tmp_path / "d", series_uid="9.9")


def test_missing_slices(tmp_path: Path, dicom_series: WriteSeries) -> None:
    zs = [10.0, 12.0, 14.0, 20.0, 22.0]  # 16 and 18 are missing
    dicom_series(tmp_path / "m", positions=[(0.0, 0.0, z) for z in zs])
    with pytest.raises(InputError) as e:
        load_volume(tmp_path / "m")
    assert "2 missing slices between z=14 and z=20" in _one_line(e)


def test_uneven_spacing(tmp_path: Path, dicom_series: WriteSeries) -> None:
    zs = [0.0, 2.0, 4.0, 7.0, 9.0, 11.0]
    dicom_series(tmp_path / "u", positions=[(0.0, 0.0, z) for z in zs])
    with pytest.raises(InputError) as e:
        load_volume(tmp_path / "u")
    assert "uneven slice spacing: 3 mm between z=4 and z=7" in _one_line(e)


def test_duplicate_positions(tmp_path: Path, dicom_series: WriteSeries) -> None:
    dicom_series(tmp_path / "dup", positions=[(0.0, 0.0, z) for z in (0.0, 2.0, 2.0, 4.0)])
    with pytest.raises(InputError, match="distinct slice positions"):
        load_volume(tmp_path / "dup")


def test_dicom_without_pixel_data(tmp_path: Path, dicom_series: WriteSeries) -> None:
    files = dicom_series(tmp_path / "np", n=3, pixel_data=False)
    with pytest.raises(InputError) as e:
        load_volume(tmp_path / "np")
    assert "no pixel data" in _one_line(e)
    with pytest.raises(InputError, match="no pixel data"):
        load_volume(files[0])


def test_folder_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="no DICOM files"):
        load_volume(tmp_path / "e")


def test_nifti_bomb_rejected_from_header(tmp_path: Path) -> None:
    hdr = nib.Nifti2Header()
    hdr.set_data_shape((100000, 100000, 100000))
    hdr.set_data_dtype(np.int16)
    hdr["vox_offset"] = 544
    buf = io.BytesIO()
    hdr.write_to(buf)
    p = tmp_path / "bomb.nii.gz"
    p.write_bytes(gzip.compress(buf.getvalue() + bytes(4)))  # header only, no voxel data
    with pytest.raises(VolumeTooLargeError) as e:
        load_volume(p)
    assert "1000000000000000 voxels" in _one_line(e)


def test_voxel_limit_for_every_reader(tmp_path: Path, dicom_series: WriteSeries) -> None:
    data = np.zeros((10, 10, 10), np.int16)
    sitk.WriteImage(sitk.GetImageFromArray(data), str(tmp_path / "v.nrrd"))
    sitk.WriteImage(sitk.GetImageFromArray(data), str(tmp_path / "v.mha"))
    np.savez(tmp_path / "v.npz", image=data)
    _nifti(tmp_path / "v.nii.gz", data)
    dicom_series(tmp_path / "dcm", n=4, rows=10, cols=10)
    for name in ("v.nrrd", "v.mha", "v.npz", "v.nii.gz", "dcm"):
        with pytest.raises(VolumeTooLargeError):
            load_volume(tmp_path / name, max_voxels=399)
        assert load_volume(tmp_path / name, max_voxels=None).data.size >= 400


def test_zip_with_parent_path_member(tmp_path: Path, dicom_series: WriteSeries) -> None:
    files = dicom_series(tmp_path / "s", n=2)
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(files[0], "ok/a.dcm")
        zf.write(files[1], "../../escape.dcm")
    with pytest.raises(InputError) as e:
        load_volume(z)
    assert "unsafe path" in _one_line(e)
    assert not (tmp_path.parent / "escape.dcm").exists()


def test_zip_bomb_checked_from_central_directory(tmp_path: Path) -> None:
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.dcm", bytes(20 * 2**20))
    assert z.stat().st_size < 2**20
    with pytest.raises(VolumeTooLargeError) as e:
        load_volume(z, max_voxels=1000)
    assert "inflates to 20 MiB" in _one_line(e)


def test_series_uid_for_non_dicom(tmp_path: Path) -> None:
    p = _nifti(tmp_path / "x.nii", np.zeros((2, 2, 2), np.float32))
    with pytest.raises(InputError, match="only applies to DICOM"):
        load_volume(p, series_uid="1.2")


def test_dicom_seg_is_not_an_image(tmp_path: Path, shared: Path) -> None:
    with pytest.raises(InputError, match="read_dicom_seg"):
        load_volume(shared / "dcmqi" / "liver.dcm")
    assert pydicom.dcmread(shared / "dcmqi" / "liver.dcm").Modality == "SEG"
