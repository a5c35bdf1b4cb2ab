"""Fixtures for the command tests, shared with the packages the commands front: the DICOM series
writer (tests/dicomseries.py) and the eval tests' threshold engines and synthetic manifest
(tests/eval/threshold.py)."""

from __future__ import annotations

from dicomseries import dicom_series
from eval.threshold import eval_engines, synthetic_manifest

__all__ = ["dicom_series", "eval_engines", "synthetic_manifest"]
