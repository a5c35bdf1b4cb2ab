"""The gzip inflater behind NIfTI uploads (segloop.io.inflate): python-isal when installed, the
same bytes as the standard library's gzip, the same one-line errors for a broken stream."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segloop.errors import InputError
from segloop.io import load_volume
from segloop.io.inflate import Inflater, gzip_opener, open_gzip

REAL = ("totalseg/example_ct_sm.nii.gz", "totalseg/example_mr_sm.nii.gz",
        "totalseg/example_seg.nii.gz")


def test_isal_reads_uploads_when_installed() -> None:
    """python-isal is a dependency (pyproject.toml): gzip NIfTI uploads are inflated by it."""
    pytest.importorskip("isal.igzip", reason="python-isal is a segloop dependency: pip install -e .")
    used, _ = gzip_opener()
    assert used is Inflater.ISAL
    assert gzip_opener(Inflater.ZLIB)[0] is Inflater.ZLIB


@pytest.mark.parametrize("rel", REAL)
def test_both_inflaters_give_the_same_bytes(shared: Path, rel: str) -> None:
    """Real CT, MR and label .nii.gz files: isal's bytes equal the standard gzip's, whole."""
    path = shared / rel
    with open_gzip(path, Inflater.ISAL) as fast, gzip.open(path, "rb") as std:
        got, want = fast.read(), std.read()
    assert got == want and len(got) > 348


@pytest.mark.parametrize("rel", REAL)
def test_load_volume_equals_nibabels_own_read(shared: Path, rel: str) -> None:
    """load_volume's voxels (read through open_gzip) equal nibabel's own gzip reader's,
    values, dtype and scaling alike."""
    path = shared / rel
    vol = load_volume(path)
    img = nib.load(str(path))
    want = np.asanyarray(img.dataobj)
    assert vol.data.dtype == (np.float32 if want.dtype == np.float64 else want.dtype)
    np.testing.assert_array_equal(vol.data, want.reshape(vol.data.shape).astype(vol.data.dtype))
    np.testing.assert_allclose(vol.affine, img.affine)


def _nifti_gz(tmp_path: Path) -> bytes:
    arr = np.arange(64 * 64 * 40, dtype=np.int16).reshape(64, 64, 40)
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(tmp_path / "ok.nii.gz"))
    return (tmp_path / "ok.nii.gz").read_bytes()


def test_a_corrupt_stream_is_one_line_input_error(tmp_path: Path) -> None:
    """Flipped bytes inside the deflate stream: InputError saying truncated or corrupt (the
    standard reader's CRC error and isal's own error class alike), never a traceback."""
    data = bytearray(_nifti_gz(tmp_path))
    for i in range(200, 400):
        data[i] ^= 0x5A
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputError, match="truncated or corrupt"):
        load_volume(bad)


def test_a_truncated_stream_is_one_line_input_error(tmp_path: Path) -> None:
    """Guard (passes on the old code too): a .nii.gz cut in half is still refused the same way."""
    data = _nifti_gz(tmp_path)
    bad = tmp_path / "cut.nii.gz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        load_volume(bad)
