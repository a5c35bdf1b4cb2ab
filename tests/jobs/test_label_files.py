"""Mask version files: only the box around the non-zero voxels is stored, every map reads back
exactly, and files written before (the whole map) still read."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from segloop.errors import InputError
from segloop.jobs import files


def _maps() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    out = [np.zeros((5, 6, 7), np.uint8), np.full((4, 3, 2), 9, np.uint8),
           np.zeros((1, 1, 1), np.uint8), np.ones((1, 1, 1), np.uint8)]
    for shape in [(5, 6, 7), (30, 20, 9), (1, 40, 3)]:
        for n in (1, 2, 5):
            a = np.zeros(shape, np.uint8)
            for _ in range(n):  # scattered voxels, corners included
                a[tuple(int(rng.integers(0, s)) for s in shape)] = int(rng.integers(1, 256))
            a[tuple(s - 1 for s in shape)] = 3
            out.append(a)
    return out


@pytest.mark.parametrize("labels", _maps())
def test_round_trip_is_exact(tmp_path: Path, labels: np.ndarray) -> None:
    files.save_labels(tmp_path / "v.npz", labels)
    back = files.load_labels(tmp_path / "v.npz")
    assert back.dtype == np.uint8 and back.shape == labels.shape
    assert np.array_equal(back, labels)


def test_only_the_box_is_stored(tmp_path: Path) -> None:
    """A liver-sized mask in a large volume: the file holds its box, not the zeros around it."""
    labels = np.zeros((200, 180, 60), np.uint8)
    labels[50:90, 60:75, 20:31] = 1
    labels[60, 70, 40] = 2
    files.save_labels(tmp_path / "v.npz", labels)
    with np.load(tmp_path / "v.npz") as z:
        assert z["labels"].shape == (40, 15, 21)
        assert z["origin"].tolist() == [50, 60, 20] and z["shape"].tolist() == [200, 180, 60]
    assert files.label_box(labels) == (slice(50, 90), slice(60, 75), slice(20, 41))
    assert files.label_box(np.zeros((3, 3, 3), np.uint8)) is None
    assert np.array_equal(files.load_labels(tmp_path / "v.npz"), labels)


def test_whole_map_files_still_read(tmp_path: Path) -> None:
    """Versions written before the box format (one ``labels`` member, the whole map)."""
    labels = np.zeros((6, 5, 4), np.uint8)
    labels[1:3, 2, 3] = 4
    npy = io.BytesIO()
    np.save(npy, labels)
    with zipfile.ZipFile(tmp_path / "old.npz", "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("labels.npy", npy.getvalue())
    assert np.array_equal(files.load_labels(tmp_path / "old.npz"), labels)


def test_a_malformed_box_file_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", labels=np.zeros((2, 2), np.uint8),
             origin=np.zeros(3, np.int64), shape=np.array([4, 4, 4]))
    with pytest.raises(InputError, match="not a label map"):
        files.load_labels(tmp_path / "bad.npz")
