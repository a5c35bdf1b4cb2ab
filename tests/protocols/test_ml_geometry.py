"""The protocol adapters' pure parts: file indices -> canonical grid in several storage
orientations, Slicer's ROI form, the step plan, nnInteractive's packed arrays."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from segloop.errors import InputError, PromptError, VolumeTooLargeError
from segloop.io.volume import Volume
from segloop.protocols import ml_geometry as geo
from segloop.protocols import nni_array
from segloop.protocols.tasks import StepKind

# storage orders: RAS, LPS, LAS, a sagittal stack (axes A, S, R), a coronal one (R, S, P)
AFFINES = {
    "RAS": np.diag([1.0, 1.0, 2.0, 1.0]),
    "LPS": np.diag([-0.8, -0.8, 2.5, 1.0]),
    "LAS": np.diag([-1.0, 1.0, 3.0, 1.0]),
    "ASR": np.array([[0, 0, 1.5, 0], [0.9, 0, 0, 0], [0, 1.1, 0, 0], [0, 0, 0, 1.0]]),
    "RSP": np.array([[1.0, 0, 0, 0], [0, 0, -2.0, 0], [0, 1.2, 0, 0], [0, 0, 0, 1.0]]),
}


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_index_to_canonical_matches_the_reoriented_array(name: str) -> None:
    aff = AFFINES[name]
    assert "".join(nib.aff2axcodes(aff)) == name
    vol = Volume(np.zeros((7, 9, 5), np.int16), aff, "nifti")
    rng = np.random.default_rng(0)
    for _ in range(10):
        ijk = tuple(int(rng.integers(n)) for n in vol.shape)
        marked = np.zeros(vol.shape, np.uint8)
        marked[ijk] = 1
        can = vol.source_to_canonical(marked)
        x, y, z = geo.to_canonical(vol, list(ijk))
        assert can[x, y, z] == 1


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_roi_in_slicer_form_maps_to_the_same_voxels(name: str) -> None:
    vol = Volume(np.zeros((7, 9, 5), np.int16), AFFINES[name], "nifti")
    box = np.zeros(vol.shape, bool)
    box[1:5, 2:8, 1:4] = True
    roi = geo.roi_to_canonical(vol, [4, 1, 7, 2, 3, 1])  # pairs reversed
    can = vol.source_to_canonical(box)
    assert np.array_equal(roi.clip(np.ones(can.shape, bool)), can)
    nested = geo.roi_to_canonical(vol, [[1, 4], [2, 7], [1, 3]])
    assert nested == roi


def test_roi_and_points_reject_bad_input() -> None:
    vol = Volume(np.zeros((7, 9, 5), np.int16), AFFINES["RAS"], "nifti")
    for bad in ([1, 2, 3], [[1, 2], [3]], "abc", [1, 2, 3, 4, 5, float("inf")]):
        with pytest.raises(PromptError):
            geo.roi_to_canonical(vol, bad)
    with pytest.raises(PromptError, match="outside"):
        geo.to_canonical(vol, [7, 0, 0])
    # a ROI reaching past the image is clipped
    r = geo.roi_to_canonical(vol, [-5, 100, 0, 8, 0, 4])
    assert r.lo == (0, 0, 0) and r.hi == (6, 8, 4)


def test_plan() -> None:
    roi = geo.Roi((2, 3, 1), (10, 12, 9))
    st = geo.plan([], [], roi, True, 1)
    assert st.kind == StepKind.SEGMENT and st.params["clear"] and st.params["propagate"]
    assert st.params["slice_index"] == 5 and st.params["box"] == [2, 3, 10, 12]
    assert st.params["refine"] == []
    st = geo.plan([(4, 5, 3), (6, 6, 7)], [(3, 3, 3)], roi, True, 2)
    assert st.params["points"] == [[4, 5], [3, 3]]
    assert st.params["point_labels"] == [1, 0] and st.params["object_id"] == 2
    assert st.params["refine"] == [{"slice_index": 7, "points": [[6, 6]], "point_labels": [1]}]
    flat = geo.plan([(4, 5, 3), (6, 6, 7)], [], None, False, 1)
    assert not flat.params["propagate"] and flat.params["refine"] == []
    with pytest.raises(PromptError):
        geo.plan([], [(1, 1, 1)], None, True, 1)


def test_write_result_types(tmp_path: Path) -> None:
    aff = AFFINES["LPS"]
    vol = Volume(np.zeros((7, 9, 5), np.int16), aff, "nifti")
    mask = np.zeros(vol.canonical_shape, bool)
    mask[1:3, 2:4, 1:2] = True
    p = geo.write_result(mask, vol, tmp_path, "a", ".nii.gz", "int16")
    img: Any = nib.load(str(p))
    assert img.get_data_dtype() == np.int16 and np.allclose(img.affine, aff)
    assert int(np.asarray(img.dataobj).sum()) == 4
    import SimpleITK as sitk

    q = geo.write_result(mask, vol, tmp_path, "b", ".nrrd", "uint16", compress=False)
    assert sitk.ReadImage(str(q)).GetPixelID() == sitk.sitkUInt16
    assert b"encoding: raw" in q.read_bytes()[:400]
    with pytest.raises(InputError):
        geo.write_result(mask, vol, tmp_path, "c", ".png")
    with pytest.raises(InputError):
        geo.write_result(mask, vol, tmp_path, "c", ".nii.gz", "complex64")


def test_packed_arrays_round_trip_with_the_client() -> None:
    ser = pytest.importorskip("nnInteractive.inference.remote.serialization")
    img = np.random.default_rng(1).normal(size=(1, 6, 7, 5)).astype(np.float32)
    assert np.array_equal(nni_array.unpack(ser.pack_array(img), 10**6), img)
    m = np.zeros((6, 7, 5), np.uint8)
    m[2:4, 1:5, 0] = 1
    assert np.array_equal(ser.unpack_array(nni_array.pack(m)), m)
    z = np.zeros((3, 5, 7), np.uint8)  # all zeros: blosc2's special frame
    assert np.array_equal(ser.unpack_array(nni_array.pack(z)), z)
    with pytest.raises(VolumeTooLargeError):
        nni_array.unpack(ser.pack_array(img), 100)


@pytest.mark.parametrize("buf", [b"", b"XXXX" + bytes(20),
                                 struct.pack("<4sBBBB6s", b"NNIA", 1, 1, 1, 6, b"object"),
                                 struct.pack("<4sBBBB5s", b"NNIA", 1, 1, 1, 5, b"uint8")
                                 + struct.pack("<q", 10) + struct.pack("<I", 1)
                                 + struct.pack("<QQ", 10, 5) + b"abcde"])
def test_packed_arrays_reject_malformed(buf: bytes) -> None:
    with pytest.raises(InputError):
        nni_array.unpack(buf, 10**6)
