"""Fixtures for segloop.io tests: the shared data folder and a synthetic DICOM series writer.

tests/io has no ``__init__.py`` on purpose: as a package named ``io`` it would shadow the stdlib.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomseries import dicom_series
from realdata import SHARED_DATA, need_shared_data

__all__ = ["SHARED", "dicom_series", "shared"]

SHARED = SHARED_DATA


@pytest.fixture
def shared() -> Path:
    """../shared/data next to the repository; skips the test when it is absent."""
    return need_shared_data()
