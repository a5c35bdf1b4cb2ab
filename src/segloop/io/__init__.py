"""Volume I/O: read images into :class:`Volume`, write masks on the source grid, DICOM-SEG,
windowing.

Must not import torch, FastAPI, Celery or any engine.
"""

from segloop.io.dicom import MultipleSeriesError, SeriesInfo, list_dicom_series
from segloop.io.dicomseg import DicomSeg, read_dicom_seg, write_dicom_seg
from segloop.io.readers import DEFAULT_MAX_VOXELS, load_volume
from segloop.io.sniff import SUPPORTED_FORMATS, detect_format
from segloop.io.volume import DicomRef, Volume
from segloop.io.windowing import CT_PRESETS, CtPreset, normalize, scale_mr, window_ct
from segloop.io.writers import load_label, resample_to, save_mask, save_volume_nifti

__all__ = [
    "CT_PRESETS",
    "DEFAULT_MAX_VOXELS",
    "SUPPORTED_FORMATS",
    "CtPreset",
    "DicomRef",
    "DicomSeg",
    "MultipleSeriesError",
    "SeriesInfo",
    "Volume",
    "detect_format",
    "list_dicom_series",
    "load_label",
    "load_volume",
    "normalize",
    "read_dicom_seg",
    "resample_to",
    "save_mask",
    "save_volume_nifti",
    "scale_mr",
    "window_ct",
    "write_dicom_seg",
]
