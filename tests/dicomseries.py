"""A synthetic DICOM series writer and its ``dicom_series`` fixture, shared by the io and CLI tests
(tests/io/conftest.py and tests/cli/conftest.py import the fixture)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

__all__ = ["WriteSeries", "dicom_series", "write_series"]

WriteSeries = Callable[..., list[Path]]


def write_series(
    folder: Path,
    *,
    n: int = 4,
    rows: int = 6,
    cols: int = 5,
    positions: Sequence[Sequence[float]] | None = None,
    iop: Sequence[float] = (1, 0, 0, 0, 1, 0),
    spacing: tuple[float, float] = (0.8, 0.7),
    series_uid: str | None = None,
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    modality: str = "CT",
    description: str = "synthetic",
    slope: float = 1.0,
    intercept: float = -1024.0,
    shuffle: bool = True,
    pixel_data: bool = True,
    seed: int = 0,
) -> list[Path]:
    """Write a single-frame DICOM series; slice k holds ``raw[k] = k*100 + r*cols + c``.

    Files are named in a shuffled order so that sorting by name is wrong. Returns the
    paths in slice order (k = 0..n-1, along the normal).
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid(entropy_srcs=[study_uid])
    row_dir = np.asarray(iop[:3], float)
    col_dir = np.asarray(iop[3:], float)
    normal = np.cross(row_dir, col_dir)
    if positions is None:
        positions = [tuple(np.array([-10.0, 20.0, 30.0]) + k * 2.5 * normal) for k in range(n)]
    order = np.random.default_rng(seed).permutation(len(positions)) if shuffle else None
    paths = []
    for k, pos in enumerate(positions):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientName = "Test^Synthetic"
        ds.PatientID = "SYN001"
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.StudyDate = "20240101"
        ds.StudyTime = "120000"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.Modality = modality
        ds.SeriesDescription = description
        ds.Manufacturer = "segloop-tests"
        ds.ImageOrientationPatient = [float(v) for v in iop]
        ds.ImagePositionPatient = [float(v) for v in pos]
        ds.PixelSpacing = [spacing[0], spacing[1]]
        ds.SliceThickness = 2.5
        ds.Rows = rows
        ds.Columns = cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        if pixel_data:
            raw = (k * 100 + np.arange(rows * cols).reshape(rows, cols)).astype(np.uint16)
            ds.PixelData = raw.tobytes()
        idx = int(order[k]) if order is not None else k
        path = folder / f"img{idx:03d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture
def dicom_series() -> WriteSeries:
    """The :func:`write_series` helper."""
    return write_series
