"""The radiological view: what 2D models see of a canonical slice, checked by hand."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from segloop.io.radiological import (
    box_to_view,
    points_to_view,
    slice_to_view,
    view_to_slice,
    volume_to_views,
)
from segloop.io.volume import Volume


def test_hand_computed_view_of_a_canonical_slice() -> None:
    # canonical (X=3, Y=2): x grows to the patient's right, y to anterior
    sl = np.array([[1, 2], [3, 4], [5, 6]])  # sl[x, y]
    view = slice_to_view(sl)
    # row 0 is anterior (y = 1), column 0 is the patient's right (x = 2)
    assert view.tolist() == [[6, 4, 2], [5, 3, 1]]
    assert np.array_equal(view_to_slice(view), sl)
    assert view[0, 0] == sl[2, 1]


def test_points_and_boxes_follow_the_pixels() -> None:
    rng = np.random.default_rng(0)
    sl = rng.integers(0, 100, (7, 5))
    view = slice_to_view(sl)
    pts = np.array([[0, 0], [6, 4], [2, 3]])
    for (c, r), (x, y) in zip(points_to_view(pts, (7, 5)).astype(int).tolist(), pts.tolist(),
                              strict=True):
        assert view[r, c] == sl[x, y]
    c0, r0, c1, r1 = (int(v) for v in box_to_view((1, 0, 4, 2), (7, 5)))
    assert (c0, r0, c1, r1) == (2, 2, 5, 4)
    # the box covers exactly the same pixels in both frames
    assert np.array_equal(np.sort(view[r0:r1 + 1, c0:c1 + 1].ravel()),
                          np.sort(sl[1:5, 0:3].ravel()))


def test_lps_stored_volume_as_stored_is_the_radiological_view() -> None:
    """A volume stored LPS (the usual DICOM-derived storage), read as stored (what MedSAM2
    does: rows = the stored j axis, columns = i), equals the view of segloop's canonical grid;
    a RAS-stored one does not (it is the view rotated by 180 degrees)."""
    rng = np.random.default_rng(1)
    stored = rng.normal(size=(6, 5, 3)).astype(np.float32)
    lps = Volume(data=stored, affine=np.diag([-1.0, -1.0, 1.0, 1.0]), source_format="npz")
    views = volume_to_views(np.asarray(lps.canonical().data))
    assert np.array_equal(views, stored.transpose(2, 1, 0))
    ras = Volume(data=stored, affine=np.eye(4), source_format="npz")
    views_ras = volume_to_views(np.asarray(ras.canonical().data))
    assert np.array_equal(views_ras, stored.transpose(2, 1, 0)[:, ::-1, ::-1])
    # nibabel agrees on what "canonical" means for that LPS affine
    img = nib.Nifti1Image(stored, np.diag([-1.0, -1.0, 1.0, 1.0]))
    assert np.array_equal(np.asarray(nib.as_closest_canonical(img).dataobj),
                          np.asarray(lps.canonical().data))
