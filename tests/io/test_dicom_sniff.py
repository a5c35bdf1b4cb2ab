"""DICOM is parsed only for files that look like DICOM (issue 9 item 3): series written without
the 128-byte preamble still read; zeros or random bytes named .dcm are skipped without a
forced parse (which took 44 s for 64 MiB of zeros)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from segloop.errors import InputError
from segloop.io import load_volume
from segloop.io.dicomfiles import looks_like_dicom

WriteSeries = Callable[..., list[Path]]


def test_looks_like_dicom() -> None:
    assert looks_like_dicom(bytes(128) + b"DICM")
    assert looks_like_dicom(b"\x02\x00\x00\x00UL\x04\x00")  # file meta, explicit VR
    assert looks_like_dicom(b"\x08\x00\x05\x00\x0a\x00\x00\x00")  # implicit VR, length 10
    assert not looks_like_dicom(bytes(132))
    assert not looks_like_dicom(np.random.default_rng(0).bytes(132))
    assert not looks_like_dicom(b"hello, this is a note\n" * 8)


def test_preambleless_series_and_zeros(tmp_path: Path, dicom_series: WriteSeries) -> None:
    folder = tmp_path / "series"
    paths = dicom_series(folder)
    for p in paths:  # drop the preamble and "DICM": the dataset starts with group 0002
        p.write_bytes(p.read_bytes()[132:])
    (folder / "zeros.dcm").write_bytes(bytes(16 << 20))
    (folder / "noise.dcm").write_bytes(np.random.default_rng(1).bytes(1 << 20))
    t0 = time.perf_counter()
    vol = load_volume(folder)
    assert time.perf_counter() - t0 < 10
    assert vol.shape[2] == len(paths)
    only_zeros = tmp_path / "zeros"
    only_zeros.mkdir()
    (only_zeros / "a.dcm").write_bytes(bytes(16 << 20))
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="no DICOM files"):
        load_volume(only_zeros)
    assert time.perf_counter() - t0 < 5
