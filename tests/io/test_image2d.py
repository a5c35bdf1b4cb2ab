"""2D images: every format reads with the right pixels, spacing and orientation; bad files
give typed one-line errors; masks are written at exactly the input's size."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from segloop.errors import InputError, UnsupportedFormatError, VolumeTooLargeError
from segloop.io.image2d import ImageSource, image2d_format, load_image2d
from segloop.io.image2d_write import save_mask_2d, write_dicom_seg_2d


def ramp(h: int = 7, w: int = 11, dtype: type = np.uint8) -> np.ndarray:
    """Pixel (r, c) = 10 r + c: every position distinguishable."""
    return (10 * np.arange(h)[:, None] + np.arange(w)[None, :]).astype(dtype)


def write_dicom_2d(path: Path, pixels: np.ndarray, *, modality: str = "DX",
                   photometric: str = "MONOCHROME2", spacing: tuple[float, float] = (0.2, 0.3),
                   frames: int = 1) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # DX for presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "p1"
    ds.PatientName = "Test^Xray"
    ds.Modality = modality
    ds.Rows, ds.Columns = pixels.shape[-2:] if pixels.ndim == 2 or frames > 1 else pixels.shape[:2]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.ImagerPixelSpacing = list(spacing)
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = np.ascontiguousarray(pixels.astype(np.uint16)).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_png_grey_8_and_16_bit(tmp_path: Path) -> None:
    a8, a16 = ramp(), ramp(dtype=np.uint16) * 500
    Image.fromarray(a8).save(tmp_path / "g8.png")
    Image.fromarray(a16).save(tmp_path / "g16.png")
    i8, i16 = load_image2d(tmp_path / "g8.png"), load_image2d(tmp_path / "g16.png")
    assert i8.source is ImageSource.PNG and not i8.is_rgb
    np.testing.assert_array_equal(i8.pixels, a8)
    assert i16.pixels.dtype == np.uint16
    np.testing.assert_array_equal(i16.pixels, a16)
    assert (i8.height, i8.width) == (7, 11)


def test_rgb_png_rgba_jpeg_bmp_tiff(tmp_path: Path) -> None:
    rgb = np.stack([ramp(), ramp()[::-1], np.full((7, 11), 9, np.uint8)], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(np.dstack([rgb, np.full((7, 11), 128, np.uint8)])).save(tmp_path / "a.png")
    Image.fromarray(rgb).save(tmp_path / "c.bmp")
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=100)
    tifffile.imwrite(tmp_path / "c16.tif", rgb.astype(np.uint16) * 200)
    tifffile.imwrite(tmp_path / "g16.tif", ramp(dtype=np.uint16) * 300)
    for name, kind in (("c.png", "png"), ("a.png", "png"), ("c.bmp", "bmp")):
        img = load_image2d(tmp_path / name)
        assert img.source.value == kind and img.is_rgb
        np.testing.assert_array_equal(img.pixels, rgb)
    jpg = load_image2d(tmp_path / "c.jpg")
    assert jpg.source is ImageSource.JPEG and jpg.pixels.shape == (7, 11, 3)
    assert np.abs(jpg.pixels.astype(int) - rgb).mean() < 6
    t16 = load_image2d(tmp_path / "c16.tif")
    assert t16.source is ImageSource.TIFF and t16.pixels.dtype == np.uint16
    np.testing.assert_array_equal(t16.pixels, rgb.astype(np.uint16) * 200)
    np.testing.assert_array_equal(load_image2d(tmp_path / "g16.tif").pixels,
                                  ramp(dtype=np.uint16) * 300)


def test_dicom_monochrome1_inverted_with_spacing(tmp_path: Path) -> None:
    raw = ramp(dtype=np.uint16) * 40 + 60000  # max + min overflows uint16
    p = write_dicom_2d(tmp_path / "x.dcm", raw, photometric="MONOCHROME1")
    assert image2d_format(p) is ImageSource.DICOM
    img = load_image2d(p)
    assert img.inverted and img.modality == "DX" and img.spacing == (0.2, 0.3)
    want = (int(raw.max()) + int(raw.min()) - raw.astype(np.int64)).astype(np.uint16)
    np.testing.assert_array_equal(img.pixels, want)  # bright = dense, same range
    assert img.pixels.min() == raw.min() and img.pixels.max() == raw.max()
    p2 = write_dicom_2d(tmp_path / "us.dcm", raw, modality="US")
    np.testing.assert_array_equal(load_image2d(p2).pixels, raw)


def test_one_slice_nifti_pixels_are_canonical_xy(tmp_path: Path) -> None:
    data = ramp(5, 8).T.astype(np.int16)  # (X=8, Y=5)
    p = tmp_path / "s.nii.gz"
    nib.save(nib.Nifti1Image(data[:, :, None], np.diag([-0.5, -0.7, 3.0, 1.0])), p)
    img = load_image2d(p)
    assert img.source is ImageSource.NIFTI and img.volume is not None
    can = img.volume.canonical().data[:, :, 0]
    np.testing.assert_array_equal(img.pixels, can.T)  # pixels[y, x] = canonical[x, y]
    assert img.spacing == pytest.approx((0.7, 0.5))
    mask = np.zeros(img.pixels.shape, bool)
    mask[1, 2] = True
    out = save_mask_2d(mask, img, tmp_path / "m.nii.gz")
    m = nib.load(out)
    assert m.shape == (8, 5, 1)
    np.testing.assert_allclose(m.affine, np.diag([-0.5, -0.7, 3.0, 1.0]))
    # canonical (x=2, y=1) is source (7-2, 4-1) = (5, 3) after flipping both axes
    assert np.argwhere(np.asarray(m.dataobj)).tolist() == [[5, 3, 0]]


def test_a_volume_is_not_a_2d_image(tmp_path: Path) -> None:
    p = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3), np.int16), np.eye(4)), p)
    assert image2d_format(p) is None
    with pytest.raises(UnsupportedFormatError, match="not a 2D image"):
        load_image2d(p)


def test_bad_files_give_one_line_errors(tmp_path: Path) -> None:
    Image.fromarray(ramp(64, 64)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        tmp_path / "ok.jpg")
    jd = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jd[: len(jd) // 3])
    (tmp_path / "text.png").write_text("hello, not a picture\n")
    for name, exc in (("cut.png", InputError), ("cut.jpg", InputError),
                      ("text.png", UnsupportedFormatError), ("nope.png", InputError)):
        with pytest.raises(exc) as info:
            load_image2d(tmp_path / name)
        assert "\n" not in str(info.value) and name in str(info.value)


def _png_claiming(path: Path, w: int, h: int) -> Path:
    """A tiny PNG whose header claims w x h pixels (its data is one compressed row)."""
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_refused_from_the_header(tmp_path: Path) -> None:
    p = _png_claiming(tmp_path / "bomb.png", 100_000, 100_000)
    assert p.stat().st_size < 200
    with pytest.raises(VolumeTooLargeError, match="10000000000 pixels"):
        load_image2d(p)
    Image.fromarray(ramp(40, 50)).save(tmp_path / "small.png")
    with pytest.raises(VolumeTooLargeError):
        load_image2d(tmp_path / "small.png", max_pixels=1000)


def test_png_mask_has_the_input_size_and_dicom_seg(tmp_path: Path) -> None:
    raw = ramp(12, 16, np.uint16)
    img = load_image2d(write_dicom_2d(tmp_path / "cr.dcm", raw, modality="CR"))
    mask = np.zeros((12, 16), bool)
    mask[3:6, 4:9] = True
    out = save_mask_2d(mask, img, tmp_path / "m.png")
    back = np.asarray(Image.open(out))
    assert back.shape == (12, 16) and set(np.unique(back)) == {0, 255}
    np.testing.assert_array_equal(back > 0, mask)
    np.testing.assert_array_equal(np.asarray(Image.open(
        save_mask_2d(mask, img, tmp_path / "l.png", foreground=None))), mask.astype(np.uint8))
    with pytest.raises(InputError, match="PNG mask"):
        save_mask_2d(mask, img, tmp_path / "m.nii.gz")
    seg = pydicom.dcmread(write_dicom_seg_2d(mask, img, tmp_path / "seg.dcm"))
    assert seg.Modality == "SEG" and (seg.Rows, seg.Columns) == (12, 16)
    np.testing.assert_array_equal(seg.pixel_array.astype(bool), mask)


def _png16(arr: np.ndarray, colour_type: int) -> bytes:
    """A 16-bit PNG written by hand, each row with the next of PNG's five filters (so the
    decoder's Sub, Up, Average and Paeth paths all run on 6- and 8-byte pixels)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    def paeth(a: int, b: int, c: int) -> int:
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        return a if pa <= pb and pa <= pc else (b if pb <= pc else c)

    h, w = arr.shape[:2]
    rows = arr.astype(">u2").reshape(h, -1).view(np.uint8).reshape(h, -1).astype(int)
    bpp = rows.shape[1] // w
    raw, prev = b"", [0] * rows.shape[1]
    for r in range(h):
        f, cur = r % 5, rows[r].tolist()
        out = []
        for i, v in enumerate(cur):
            a = cur[i - bpp] if i >= bpp else 0
            c = prev[i - bpp] if i >= bpp else 0
            pred = [0, a, prev[i], (a + prev[i]) // 2, paeth(a, prev[i], c)][f]
            out.append((v - pred) % 256)
        raw += bytes([f, *out])
        prev = cur
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def test_png_rgb_and_rgba_16_bit_keep_all_bits(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 65536, (9, 13, 3)).astype(np.uint16)
    rgba = rng.integers(0, 65536, (9, 13, 4)).astype(np.uint16)
    (tmp_path / "rgb16.png").write_bytes(_png16(rgb, 2))
    (tmp_path / "rgba16.png").write_bytes(_png16(rgba, 6))
    a, b = load_image2d(tmp_path / "rgb16.png"), load_image2d(tmp_path / "rgba16.png")
    assert a.pixels.dtype == np.uint16 and a.is_rgb
    np.testing.assert_array_equal(a.pixels, rgb)
    np.testing.assert_array_equal(b.pixels, rgba[:, :, :3])  # alpha dropped
    eight = rng.integers(0, 256, (9, 13, 3)).astype(np.uint8)  # 8-bit colour: unchanged path
    Image.fromarray(eight).save(tmp_path / "rgb8.png")
    np.testing.assert_array_equal(load_image2d(tmp_path / "rgb8.png").pixels, eight)


def test_png_grey_alpha_16_bit_keeps_all_bits(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    la = rng.integers(0, 65536, (9, 13, 2)).astype(np.uint16)
    (tmp_path / "la16.png").write_bytes(_png16(la, 4))
    img = load_image2d(tmp_path / "la16.png")
    assert img.pixels.dtype == np.uint16 and not img.is_rgb
    np.testing.assert_array_equal(img.pixels, la[:, :, 0])  # alpha dropped, all 16 bits kept
