"""DICOM-SEG export (highdicom) and import, aligned with a Volume's canonical grid.

``write_dicom_seg`` writes a BINARY Segmentation referencing the source DICOM series of a
Volume, one segment per label value present. ``read_dicom_seg`` reads any Segmentation
(BINARY or FRACTIONAL, thresholded at half the maximum) and places each frame by its
ImagePositionPatient: onto a reference Volume's canonical grid when one is given, otherwise
onto the SEG's own frame geometry. Uses pydicom/highdicom only; must not import torch.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.sr.codedict import codes

from segloop.errors import InputError
from segloop.io.dicomfiles import read_dataset
from segloop.io.sniff import one_line
from segloop.io.volume import Volume
from segloop.io.writers import atomic_path

__all__ = ["DicomSeg", "read_dicom_seg", "save_segmentation", "segment_codes", "segment_description",
           "write_dicom_seg"]

log = logging.getLogger(__name__)

_SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: lower-case keyword in a segment name -> SNOMED-CT property type keyword (pydicom codes.SCT)
_ORGANS = {
    "liver": "Liver",
    "spleen": "Spleen",
    "kidney": "Kidney",
    "stomach": "Stomach",
    "aorta": "Aorta",
    "lung": "Lung",
    "heart": "Heart",
    "brain": "Brain",
    "pancreas": "Pancreas",
    "spinal cord": "SpinalCord",
    "grey matter": "GrayMatter",
    "gray matter": "GrayMatter",
    "bone": "Bone",
}
_ABNORMAL = {"tumour": "Neoplasm", "tumor": "Neoplasm", "lesion": "Lesion", "mass": "Mass"}


def segment_codes(name: str) -> tuple[Any, Any]:
    """(SegmentedPropertyCategory, SegmentedPropertyType) SNOMED codes of a name: exactly the
    structure it names (:func:`segloop.io.terminology.find_structure`, e.g. one picked from
    the viewer's list), else guessed from words in it."""
    from segloop.io.terminology import find_structure

    exact = find_structure(name)
    if exact is not None:
        return exact.codes()
    low = name.lower()
    for key, kw in _ABNORMAL.items():
        if key in low:
            return codes.SCT.MorphologicallyAbnormalStructure, getattr(codes.SCT, kw)
    for key, kw in _ORGANS.items():
        if key in low:
            return codes.SCT.AnatomicalStructure, getattr(codes.SCT, kw)
    return codes.SCT.Tissue, codes.SCT.Tissue


def write_dicom_seg(
    labels: npt.NDArray[Any],
    volume: Volume,
    path: str | Path,
    segments: dict[int, str] | None = None,
    series_description: str | None = None,
) -> Path:
    """Write a DICOM-SEG (BINARY) for ``labels`` referencing ``volume``'s source series.

    labels: uint8 label map ``(X, Y, Z)`` on ``volume.canonical()``'s grid; one segment per
        non-zero value present (segment numbers 1..n in increasing label value).
    volume: a Volume read from a DICOM series (``volume.dicom`` set), else InputError.
    segments: optional label value -> segment name (also used to pick SNOMED codes).
    series_description: the SEG series' SeriesDescription (default "segloop segmentation").
    """
    if volume.dicom is None:
        raise InputError(
            f"DICOM-SEG export needs DICOM input, but the image is {volume.source_format}; "
            "write a NIfTI mask instead"
        )
    arr = np.asarray(labels)
    want = volume.canonical_shape
    if arr.shape != want:
        raise InputError(f"labels have shape {arr.shape}, expected the canonical grid {want}")
    src = volume.canonical_to_source(arr)  # (cols, rows, slices)
    values = [int(v) for v in np.unique(src) if v != 0]
    if not values:
        raise InputError("the mask is empty: nothing to export as DICOM-SEG")
    names = segments or {}
    descriptions = [segment_description(n, names.get(v, f"segment {v}"))
                    for n, v in enumerate(values, start=1)]
    frames = np.ascontiguousarray(src.transpose(2, 1, 0))  # (slices, rows, cols)
    pixel = np.stack([frames == v for v in values], axis=-1)
    try:
        sources = [read_dataset(f, header_only=True) for f in volume.dicom.files]
    except Exception as exc:
        raise InputError(f"cannot re-read the source DICOM series for the SEG: {one_line(exc)}") from exc
    _fill_missing_uids(sources)
    dest = save_segmentation(sources, pixel, descriptions, path, "series", series_description)
    log.debug("wrote DICOM-SEG %s with %d segments", dest, len(values))
    return dest


def segment_description(number: int, name: str) -> Any:
    """One highdicom SegmentDescription: ``name`` (label up to 64 characters, SNOMED codes picked
    from it by :func:`segment_codes`), segloop as the semi-automatic algorithm."""
    import highdicom as hd

    from segloop import __version__

    category, ptype = segment_codes(name)
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=name[:64],
        segmented_property_category=category,
        segmented_property_type=ptype,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="segloop", version=__version__, family=codes.cid7162.ArtificialIntelligence
        ),
    )


def save_segmentation(sources: list[Any], pixel_array: npt.NDArray[Any], descriptions: list[Any],
                      path: str | Path, what: str, series_description: str | None = None) -> Path:
    """Build the BINARY DICOM-SEG of ``pixel_array`` (frames, rows, cols[, segments]) over
    ``sources`` with segloop's series fields and write it atomically; a source highdicom cannot
    use is an InputError naming ``what`` ("series", "image")."""
    import highdicom as hd

    from segloop import __version__

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # highdicom person-name hints
            seg = hd.seg.Segmentation(
                source_images=sources,
                pixel_array=pixel_array,
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=descriptions,
                series_instance_uid=hd.UID(),
                series_number=300,
                sop_instance_uid=hd.UID(),
                instance_number=1,
                manufacturer="segloop",
                manufacturer_model_name="segloop",
                software_versions=__version__,
                device_serial_number="0",
                content_label="SEGLOOP",
                content_description="segloop segmentation",
                series_description=(series_description or "segloop segmentation")[:64],
            )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise InputError(f"cannot build a DICOM-SEG for this {what}: {one_line(exc)}") from exc
    dest = Path(path)
    with atomic_path(dest) as tmp:
        seg.save_as(tmp)
    return dest


def _fill_missing_uids(sources: list[Any]) -> None:
    """Anonymised series sometimes blank their UIDs; fill them so a SEG can be built.

    SOP Class/Instance UIDs come from the file meta (what the files really are); blank
    Study/Series UIDs get deterministic UIDs derived from the Frame of Reference, so repeated
    exports agree. A warning is logged because PACS will not link such a SEG to its series.
    """
    from pydicom.uid import generate_uid

    seed = str(sources[0].get("FrameOfReferenceUID", "")) or "segloop"
    filled: set[str] = set()
    for ds in sources:
        if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
            del ds.SpecificCharacterSet  # blank means the default repertoire
        meta = getattr(ds, "file_meta", None)
        for attr, meta_attr in (
            ("SOPClassUID", "MediaStorageSOPClassUID"),
            ("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
        ):
            if not str(ds.get(attr, "")) and meta is not None and meta_attr in meta:
                setattr(ds, attr, meta[meta_attr].value)
                filled.add(attr)
        for attr in ("StudyInstanceUID", "SeriesInstanceUID"):
            if not str(ds.get(attr, "")):
                setattr(ds, attr, generate_uid(entropy_srcs=[seed, attr]))
                filled.add(attr)
    if filled:
        log.warning("source series has blank %s; filled them for the DICOM-SEG", sorted(filled))


@dataclass(frozen=True)
class DicomSeg:
    """A DICOM-SEG read onto a grid.

    labels: uint8 ``(X, Y, Z)`` label map on ``geometry.canonical()``'s grid (segment
        numbers; where segments overlap the highest number wins).
    masks: segment number -> bool ``(X, Y, Z)`` on the same grid (overlaps kept).
    segments: segment number -> SegmentLabel.
    geometry: the grid the arrays refer to (the reference Volume, or the SEG's own frame
        geometry; its ``data`` is the label map on its source grid).
    referenced_series_uid: the source series the SEG references, if stated.
    """

    labels: npt.NDArray[np.uint8]
    masks: dict[int, npt.NDArray[np.bool_]]
    segments: dict[int, str]
    geometry: Volume
    referenced_series_uid: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _floats(seq: Any, n: int) -> npt.NDArray[np.float64]:
    vals = np.asarray([float(v) for v in seq], dtype=np.float64)
    if vals.size != n:
        raise InputError(f"DICOM-SEG geometry attribute has {vals.size} values, expected {n}")
    return vals


def _frame_attr(ds: Any, frame: Any, seq: str, attr: str) -> Any:
    for group in (frame, ds.SharedFunctionalGroupsSequence[0]):
        if seq in group and attr in group[seq].value[0]:
            return group[seq].value[0][attr].value
    raise InputError(f"DICOM-SEG lacks {seq}/{attr}; cannot place its frames in space")


def read_dicom_seg(path: str | Path, reference: Volume | None = None, *,
                   frame_of_reference: str | None = None,
                   max_pixels: int | None = None) -> DicomSeg:
    """Read a DICOM Segmentation; arrays on ``reference``'s canonical grid when given.

    Frames are placed by ImagePositionPatient (pixel centres rounded to the nearest voxel
    of the target grid), so a SEG covering only some slices of the reference works.
    ``frame_of_reference``: the reference series' FrameOfReferenceUID; a SEG in another one
    is refused (its positions mean nothing on this grid). ``max_pixels``: the most frame
    pixels (frames x rows x columns) accepted, checked before any pixel data is decoded
    (default with a reference: 64 Mi + 8 per reference voxel; none without one); a
    deflate-compressed file may not inflate to more than that plus 16 MiB either.
    Malformed, truncated or inconsistent files raise InputError with one line.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    if max_pixels is None and reference is not None:
        max_pixels = (1 << 26) + 8 * int(np.prod(reference.shape))
    if max_pixels is not None:
        _check_inflated_size(p, max_pixels + (16 << 20))
    try:
        ds = pydicom.dcmread(p)
    except Exception as exc:
        raise InputError(f"{p}: not a readable DICOM file ({one_line(exc)})") from exc
    if str(ds.get("SOPClassUID", "")) != _SEG_SOP_CLASS:
        raise InputError(f"{p}: not a DICOM Segmentation (Modality {ds.get('Modality', '?')})")
    seg_for = str(ds.get("FrameOfReferenceUID", "") or "")
    if frame_of_reference and seg_for and seg_for != frame_of_reference:
        raise InputError(f"{p}: the DICOM-SEG is in another frame of reference ({seg_for}) "
                         f"than this series ({frame_of_reference}): it segments another series")
    try:
        return _read_seg(ds, p, reference, max_pixels)
    except (InputError, MemoryError):
        raise
    except Exception as exc:  # missing attributes, bad values, short pixel data ...
        raise InputError(f"{p}: the DICOM-SEG is malformed or truncated ({one_line(exc)})"
                         ) from exc


def _check_inflated_size(p: Path, limit: int) -> None:
    """A Deflated Explicit VR Little Endian file: VolumeTooLargeError when its dataset
    inflates to more than ``limit`` bytes (counted in 1 MiB steps, nothing kept)."""
    import zlib

    from segloop.errors import VolumeTooLargeError

    try:
        meta = pydicom.filereader.read_file_meta_info(p)
    except Exception:
        return  # not a DICOM Part 10 file: dcmread says so
    if str(meta.get("TransferSyntaxUID", "")) != pydicom.uid.DeflatedExplicitVRLittleEndian:
        return
    raw = p.read_bytes()
    start = 132 + 12 + int(meta.get("FileMetaInformationGroupLength", 0))
    d = zlib.decompressobj(-15)
    size, chunk = 0, d.decompress(raw[start:], 1 << 20)
    try:
        while True:
            size += len(chunk)
            if size > limit:
                raise VolumeTooLargeError(f"{p}: the deflate-compressed DICOM-SEG inflates to "
                                          f"more than {limit} bytes, more than a segmentation "
                                          "of this volume can hold; refusing it")
            if not d.unconsumed_tail:
                break
            chunk = d.decompress(d.unconsumed_tail, 1 << 20)
    except zlib.error as exc:
        raise InputError(f"{p}: the deflate-compressed DICOM-SEG is corrupt ({exc})") from exc


def _read_seg(ds: Any, p: Path, reference: Volume | None, max_pixels: int | None) -> DicomSeg:
    from segloop.errors import VolumeTooLargeError

    n_frames, rows, cols = int(ds.get("NumberOfFrames", 1)), int(ds.Rows), int(ds.Columns)
    if min(n_frames, rows, cols) < 1:
        raise InputError(f"{p}: the DICOM-SEG has {n_frames} frames of {rows} x {cols} pixels")
    if max_pixels is not None and n_frames * rows * cols > max_pixels:
        raise VolumeTooLargeError(f"{p}: the DICOM-SEG declares {n_frames} frames of {rows} x "
                                  f"{cols} pixels, more than a segmentation of this volume "
                                  f"can hold ({max_pixels} pixels); refusing it")
    per_frame = ds.PerFrameFunctionalGroupsSequence
    if len(per_frame) != n_frames:
        raise InputError(f"{p}: the DICOM-SEG declares {n_frames} frames but describes "
                         f"{len(per_frame)}")
    segments = {int(s.SegmentNumber): str(s.get("SegmentLabel", "")) for s in ds.SegmentSequence}
    bad = sorted(n for n in segments if not 1 <= n <= 255)
    if bad:
        raise InputError(f"{p}: segment number {bad[0]} is outside 1..255")
    try:
        pix = np.asarray(ds.pixel_array)
    except Exception as exc:
        raise InputError(f"{p}: the DICOM-SEG's pixel data is unreadable or truncated "
                         f"({one_line(exc)})") from exc
    if pix.size != n_frames * rows * cols:
        raise InputError(f"{p}: the DICOM-SEG's pixel data holds {pix.size} pixels, not "
                         f"{n_frames} x {rows} x {cols}")
    pix = pix.reshape(n_frames, rows, cols)
    if str(ds.get("SegmentationType", "BINARY")) == "FRACTIONAL":
        pix = pix > float(ds.get("MaximumFractionalValue", 255)) / 2
    else:
        pix = pix > 0
    iop = _floats(_frame_attr(ds, per_frame[0], "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
    ps = _floats(_frame_attr(ds, per_frame[0], "PixelMeasuresSequence", "PixelSpacing"), 2)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    pos = np.stack(
        [_floats(_frame_attr(ds, f, "PlanePositionSequence", "ImagePositionPatient"), 3) for f in per_frame]
    )
    seg_no = [
        int(_frame_attr(ds, f, "SegmentIdentificationSequence", "ReferencedSegmentNumber")) for f in per_frame
    ]
    unknown = sorted(set(seg_no) - set(segments))
    if unknown:
        raise InputError(f"{p}: frames refer to segment {unknown[0]}, which the SEG's "
                         "SegmentSequence does not define")
    if reference is None:
        reference = _own_geometry(ds, per_frame[0], pos, normal, row_dir, col_dir, ps)
    inv = np.linalg.inv(reference.affine)
    shape = reference.shape
    masks_src = {n: np.zeros(shape, dtype=bool) for n in sorted(segments)}
    for f in range(n_frames):
        r, c = np.nonzero(pix[f])
        if r.size == 0:
            continue
        lps = pos[f][None, :] + c[:, None] * (row_dir * ps[1]) + r[:, None] * (col_dir * ps[0])
        ras = lps * np.array([-1.0, -1.0, 1.0])
        ijk = np.rint(ras @ inv[:3, :3].T + inv[:3, 3]).astype(np.int64)
        ok = np.all((ijk >= 0) & (ijk < np.asarray(shape)), axis=1)
        if not ok.all():
            log.debug("frame %d: %d pixels fall outside the reference grid", f, int((~ok).sum()))
        ijk = ijk[ok]
        masks_src.setdefault(seg_no[f], np.zeros(shape, dtype=bool))[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = True
    label_src = np.zeros(shape, dtype=np.uint8)
    for n in sorted(masks_src):
        label_src[masks_src[n]] = n
    geometry = Volume(
        data=label_src,
        affine=reference.affine,
        source_format=reference.source_format,
        modality="SEG",
        source_path=reference.source_path,
        dicom=reference.dicom,
        meta=dict(reference.meta),
        header=reference.header,
    )
    ref_series = None
    if "ReferencedSeriesSequence" in ds:
        ref_series = str(ds.ReferencedSeriesSequence[0].get("SeriesInstanceUID", "")) or None
    return DicomSeg(
        labels=np.asarray(geometry.source_to_canonical(label_src), dtype=np.uint8),
        masks={n: np.asarray(geometry.source_to_canonical(m), dtype=bool) for n, m in masks_src.items()},
        segments=segments,
        geometry=geometry,
        referenced_series_uid=ref_series,
        meta={"segmentation_type": str(ds.get("SegmentationType", "")), "n_frames": n_frames},
    )


def _own_geometry(
    ds: Any,
    frame0: Any,
    pos: npt.NDArray[np.float64],
    normal: npt.NDArray[np.float64],
    row_dir: npt.NDArray[np.float64],
    col_dir: npt.NDArray[np.float64],
    ps: npt.NDArray[np.float64],
) -> Volume:
    """The SEG's own grid: its frames' plane, slices every SpacingBetweenSlices (or the
    smallest gap between frame positions) from the lowest frame along the normal."""
    d = pos @ normal
    uniq = np.unique(np.round(d, 3))
    step = 0.0
    with contextlib.suppress(InputError):
        step = float(_frame_attr(ds, frame0, "PixelMeasuresSequence", "SpacingBetweenSlices"))
    if step <= 0:
        gaps = np.diff(uniq)
        step = float(gaps.min()) if gaps.size else 1.0
    nk = int(np.rint((uniq[-1] - uniq[0]) / step)) + 1
    first = pos[int(np.argmin(d))]
    lps = np.eye(4)
    lps[:3, 0] = row_dir * ps[1]
    lps[:3, 1] = col_dir * ps[0]
    lps[:3, 2] = normal * step
    lps[:3, 3] = first
    return Volume(
        data=np.zeros((int(ds.Columns), int(ds.Rows), nk), dtype=np.uint8),
        affine=_LPS_TO_RAS @ lps,
        source_format="dicom-seg",
        modality="SEG",
    )
