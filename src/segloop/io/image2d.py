"""2D images (photographs, X-rays, ultrasound frames, one slice): the :class:`Image2D` type and
its readers.

Coordinates are those of every image tool (docs/DESIGN.md): ``pixels[row, col]``, ``x`` =
column, ``y`` = row, from the top-left. Readers:

- PNG, JPEG, BMP (Pillow) and TIFF (tifffile): grey or RGB, 8 or 16 bit (16-bit colour and grey+alpha PNGs
  keep all 16 bits, see :func:`_png_rgb16`); an alpha channel is
  dropped, palette images become RGB; no spacing (their dpi is a print resolution). The pixel
  count is checked from the header before any pixel is decoded (decompression-bomb guard).
- One single-frame DICOM file (:mod:`segloop.io.dicom2d`).
- A one-slice NIfTI/NRRD/MHA: read as a :class:`~segloop.io.volume.Volume` with one slice; its
  pixels are the canonical slice as the engines see it (row = canonical y, column = canonical
  x), so ``x``/``y`` are also the volume's canonical voxel indices and the mask goes back on
  the source grid (``Image2D.volume``).

Must not import torch, FastAPI, Celery or any engine.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from segloop.errors import InputError, UnsupportedFormatError, VolumeTooLargeError
from segloop.io.sniff import check_readable, one_line
from segloop.io.volume import Volume

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "Image2D",
    "ImageSource",
    "check_pixels",
    "image2d_format",
    "load_image2d",
    "load_volume_one_slice",
    "to_grey_or_rgb",
]

log = logging.getLogger(__name__)

#: default pixel limit (2**28, e.g. 16384 x 16384): a decompression-bomb guard
DEFAULT_MAX_PIXELS = 2**28

class ImageSource(StrEnum):
    """The file format a 2D image was read from."""

    PNG = "png"
    JPEG = "jpeg"
    TIFF = "tiff"
    BMP = "bmp"
    DICOM = "dicom"
    NIFTI = "nifti"
    NRRD = "nrrd"
    MHA = "mha"


_PICTURES = (ImageSource.PNG, ImageSource.JPEG, ImageSource.TIFF, ImageSource.BMP)


@dataclass(frozen=True)
class Image2D:
    """One 2D image.

    pixels: ``(H, W)`` grey or ``(H, W, 3)`` RGB array, row 0 at the top, numeric dtype as
        stored (uint8/uint16 for pictures; DICOM after the modality LUT, e.g. int16 HU).
    source: the format read. spacing: ``(row_mm, col_mm)`` pixel size when the file says it.
    modality: DICOM modality (``"DX"``, ``"US"``...) or the volume's, else None.
    source_path: the file read. inverted: True when MONOCHROME1 pixels were inverted.
    volume: for a one-slice NIfTI/NRRD/MHA, the source Volume (the mask goes on its grid).
    meta: reader-specific extras (JSON-able).
    """

    pixels: npt.NDArray[Any]
    source: ImageSource
    spacing: tuple[float, float] | None = None
    modality: str | None = None
    source_path: Path | None = None
    inverted: bool = False
    volume: Volume | None = field(default=None, repr=False, compare=False)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        p = self.pixels
        if not (p.ndim == 2 or (p.ndim == 3 and p.shape[2] == 3)):
            raise ValueError(f"Image2D pixels must be (H, W) or (H, W, 3), got {p.shape}")

    @property
    def height(self) -> int:
        """Rows."""
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        """Columns."""
        return int(self.pixels.shape[1])

    @property
    def is_rgb(self) -> bool:
        """True for ``(H, W, 3)`` colour pixels."""
        return self.pixels.ndim == 3

    @property
    def is_picture(self) -> bool:
        """True for PNG/JPEG/TIFF/BMP input (masks are written as PNG)."""
        return self.source in _PICTURES

    def mask_to_volume(self, mask: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """A ``(H, W)`` mask as the ``(X, Y, 1)`` canonical mask of :attr:`volume`."""
        m = np.asarray(mask)
        if m.shape != (self.height, self.width):
            raise InputError(f"mask has shape {m.shape}, expected the image's {(self.height, self.width)}")
        return np.ascontiguousarray(m.T[:, :, None])


# --------------------------------------------------------------------------- format sniffing


def _picture_kind(head: bytes) -> ImageSource | None:
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return ImageSource.PNG
    if head[:3] == b"\xff\xd8\xff":
        return ImageSource.JPEG
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return ImageSource.TIFF
    if head[:2] == b"BM" and len(head) >= 26:
        return ImageSource.BMP
    return None


def _volume_dims(path: Path, fmt: str) -> list[int] | None:
    """The image dimensions from a NIfTI/NRRD/MHA header (no voxel data read)."""
    try:
        if fmt == "nifti":
            import nibabel as nib

            hdr: Any = nib.load(str(path)).header
            return [int(s) for s in hdr.get_data_shape()]
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return [int(s) for s in reader.GetSize()]
    except Exception:
        return None


def image2d_format(path: str | Path) -> ImageSource | None:
    """The 2D source format of ``path`` when it holds ONE 2D image, else None (a volume or an
    unknown file: the volume reader decides). Reads headers only."""
    from segloop.io.sniff import detect_format

    p = Path(path).expanduser()
    check_readable(p)
    if p.is_dir():
        return None
    try:
        with open(p, "rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise InputError(f"{p}: cannot read the file ({exc.strerror or one_line(exc)})") from exc
    kind = _picture_kind(head)
    if kind is not None:
        return kind
    try:
        fmt = detect_format(p)
    except (InputError, UnsupportedFormatError):
        return None
    if fmt == "dicom":
        from segloop.io.dicom2d import dicom_is_2d

        return ImageSource.DICOM if dicom_is_2d(p) else None
    if fmt in ("nifti", "nrrd", "mha"):
        dims = _volume_dims(p, fmt)
        if dims is None:
            return None
        while len(dims) > 2 and dims[-1] == 1:
            dims.pop()
        if len(dims) == 2:
            return ImageSource(fmt)
    return None


# --------------------------------------------------------------------------- readers


def check_pixels(path: Path, h: int, w: int, channels: int, max_pixels: int | None) -> None:
    """InputError for an empty image, VolumeTooLargeError above ``max_pixels`` (from headers)."""
    if h <= 0 or w <= 0:
        raise InputError(f"{path}: the image is empty ({w} x {h} pixels)")
    if max_pixels is not None and h * w > max_pixels:
        raise VolumeTooLargeError(
            f"{path}: the header declares {w} x {h} = {w * h} pixels, above the limit of"
            f" {max_pixels} (max_pixels); nothing was decoded"
        )
    del channels


def to_grey_or_rgb(path: Path, arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """(H, W), (H, W, 1), (H, W, 2: grey+alpha), (H, W, 3) or (H, W, 4: RGBA) -> (H, W) / (H, W, 3)."""
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[2] in (1, 2):
        return np.ascontiguousarray(arr[:, :, 0])
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        rgb = np.ascontiguousarray(arr[:, :, :3])
        return rgb
    raise InputError(
        f"{path}: found an image of shape {arr.shape}; segloop needs one grey or RGB 2D image"
        " (a multi-page or multi-channel file? save one page as PNG or TIFF)"
    )


def _png_rgb16(path: Path, im: Any) -> npt.NDArray[np.uint16] | None:
    """A 16-bit RGB / RGBA / grey+alpha PNG with all 16 bits, None for any other PNG.

    Pillow keeps only the high byte of 16-bit colour samples (its ``RGB;16B`` unpacker). Its
    zlib and filter decoding are right, though: so the file is decoded twice, the second
    time with the little-endian unpacker (``RGB;16L``), which on PNG's big-endian samples
    keeps the low byte; high * 256 + low is the sample. A 16-bit grey+alpha PNG (opened as
    RGBA from ``LA;16B``: grey's high byte three times) is decoded once more with the plain
    ``RGBA`` unpacker, which has the same 4 bytes a pixel and so gives the bytes as they are:
    grey high, grey low, alpha high, alpha low; the result is ``(H, W, 2)``."""
    from PIL import Image

    tile = list(getattr(im, "tile", []) or [])
    if len(tile) != 1:
        return None
    if im.mode == "RGBA" and tile[0].args == "LA;16B":
        with Image.open(path) as again:
            again.tile = [again.tile[0]._replace(args="RGBA")]
            raw = np.asarray(again).astype(np.uint16)
        pairs: npt.NDArray[np.uint16] = raw[:, :, 0::2] * np.uint16(256)
        pairs |= raw[:, :, 1::2]
        return pairs
    if im.mode not in ("RGB", "RGBA") or tile[0].args not in ("RGB;16B", "RGBA;16B"):
        return None
    high = np.asarray(im)
    with Image.open(path) as again:
        first = again.tile[0]
        again.tile = [first._replace(args=str(first.args).replace(";16B", ";16L"))]
        low = np.asarray(again)
    out: npt.NDArray[np.uint16] = high.astype(np.uint16) * np.uint16(256)
    out |= low.astype(np.uint16)
    return out


def _read_pillow(path: Path, kind: ImageSource, max_pixels: int | None) -> Image2D:
    from PIL import Image

    try:
        with Image.open(path) as opened:
            im: Image.Image = opened
            w, h = im.size
            check_pixels(path, h, w, len(im.getbands()), max_pixels)
            n_frames = int(getattr(im, "n_frames", 1))
            if n_frames > 1:
                raise InputError(
                    f"{path}: the file holds {n_frames} frames; segloop needs one 2D image"
                )
            dpi = im.info.get("dpi")
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            elif im.mode == "1":
                im = im.convert("L")
            arr = _png_rgb16(path, im) if kind is ImageSource.PNG else None
            if arr is None:
                arr = np.asarray(im)
    except Image.DecompressionBombError as exc:
        raise VolumeTooLargeError(f"{path}: refused as a decompression bomb ({one_line(exc)})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(
            f"{path}: cannot decode the {kind.value.upper()} image, it may be truncated or corrupt"
            f" ({one_line(exc)})"
        ) from exc
    arr = to_grey_or_rgb(path, arr)
    if arr.dtype == np.int32 and arr.size and arr.min() >= 0 and arr.max() <= 65535:
        arr = arr.astype(np.uint16)  # Pillow's "I" mode for 16-bit PNGs
    # a picture's dpi is a print resolution, not a physical pixel size: no spacing
    meta = {"dpi": [float(d) for d in dpi[:2]]} if dpi else {}
    return Image2D(pixels=arr, source=kind, source_path=path, meta=meta)


def _read_tiff(path: Path, max_pixels: int | None) -> Image2D:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            if not tf.series:
                raise InputError(f"{path}: the TIFF file holds no image")
            series = tf.series[0]
            shape = tuple(int(s) for s in series.shape)
            dims = [s for s in shape if s > 4] or list(shape)
            if len(tf.pages) > 1 and len(series.shape) > 2 and series.shape[0] > 4:
                raise InputError(
                    f"{path}: the TIFF holds {series.shape[0]} pages; segloop needs one 2D image"
                )
            check_pixels(path, dims[0], dims[1] if len(dims) > 1 else 1, 1, max_pixels)
            arr = series.asarray()
    except InputError:
        raise
    except Exception as exc:  # tifffile raises many types on bad files
        raise InputError(
            f"{path}: cannot decode the TIFF image, it may be truncated or corrupt ({one_line(exc)})"
        ) from exc
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar RGB
    arr = to_grey_or_rgb(path, arr)
    return Image2D(pixels=arr, source=ImageSource.TIFF, source_path=path)


def _read_one_slice(path: Path, kind: ImageSource, max_pixels: int | None) -> Image2D:
    vol = load_volume_one_slice(path, kind, max_pixels)
    can = vol.canonical()
    if can.shape[2] != 1:
        raise InputError(
            f"{path}: this one-slice image is not axial (its single slice lies along canonical"
            f" axis {can.shape.index(1)}); segloop reads one-slice images on the axial plane"
        )
    sx, sy, _ = can.spacing
    return Image2D(pixels=np.ascontiguousarray(can.data[:, :, 0].T), source=kind,
                   spacing=(float(sy), float(sx)), modality=vol.modality, source_path=path,
                   volume=vol)


def load_volume_one_slice(path: Path, kind: ImageSource, max_pixels: int | None) -> Volume:
    """A 2D NIfTI/NRRD/MHA as a Volume with one slice (2D headers get a third axis of 1)."""
    import nibabel as nib

    dims = _volume_dims(path, kind.value) or []
    while len(dims) > 2 and dims[-1] == 1:
        dims.pop()
    if len(dims) != 2:
        raise InputError(f"{path}: not a one-slice image (shape {tuple(dims)})")
    check_pixels(path, dims[1], dims[0], 1, max_pixels)
    if kind is ImageSource.NIFTI:
        try:
            img: Any = nib.load(str(path))
            data = np.asarray(img.dataobj)
        except Exception as exc:
            raise InputError(f"{path}: cannot read the NIfTI image, it may be truncated ({one_line(exc)})"
                             ) from exc
        data = data.reshape(dims[0], dims[1], 1)
        aff = np.asarray(img.affine, dtype=np.float64)
        return Volume(data=data, affine=aff, source_format="nifti", source_path=path,
                      header=img.header)
    import SimpleITK as sitk

    try:
        im = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"{path}: cannot read the image, it may be truncated ({one_line(exc)})") from exc
    arr = sitk.GetArrayFromImage(im)  # (rows=j, cols=i) for 2D
    data = np.ascontiguousarray(arr.reshape(dims[1], dims[0]).T[:, :, None])
    sp = list(im.GetSpacing())[:2]
    org = list(im.GetOrigin())[:2]
    direction = np.asarray(im.GetDirection(), dtype=np.float64)
    d2 = direction.reshape(math.isqrt(direction.size), -1)[:2, :2]
    lps = np.eye(4)
    lps[:2, :2] = d2 * np.asarray(sp)[None, :]
    lps[:2, 3] = org
    aff = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return Volume(data=data, affine=aff, source_format=kind.value, source_path=path)


def load_image2d(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image2D:
    """Read one 2D image (see the module docstring for the formats and conventions).

    max_pixels: refuse images declaring more pixels than this (checked before decoding).
    Raises InputError (missing, truncated, not one 2D image), UnsupportedFormatError and
    VolumeTooLargeError, each with a one-line message.
    """
    p = Path(path).expanduser()
    kind = image2d_format(p)
    if kind is None:
        raise UnsupportedFormatError(
            f"{p}: not a 2D image; segloop reads PNG, JPEG, TIFF, BMP, one single-frame DICOM file"
            " and one-slice NIfTI/NRRD/MHA as 2D images"
        )
    if kind is ImageSource.TIFF:
        img = _read_tiff(p, max_pixels)
    elif kind in _PICTURES:
        img = _read_pillow(p, kind, max_pixels)
    elif kind is ImageSource.DICOM:
        from segloop.io.dicom2d import read_dicom_2d

        img = read_dicom_2d(p, max_pixels)
    else:
        img = _read_one_slice(p, kind, max_pixels)
    px = img.pixels
    if not np.issubdtype(px.dtype, np.number) or np.iscomplexobj(px):
        raise InputError(f"{p}: pixels of type {px.dtype} are not a real numeric image")
    if np.issubdtype(px.dtype, np.floating) and not np.isfinite(px).all():
        raise InputError(f"{p}: the image holds NaN or infinite pixel values")
    log.debug("loaded 2D %s %s shape=%s dtype=%s", kind.value, p, px.shape, px.dtype)
    return img
