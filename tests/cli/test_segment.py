"""``segloop segment`` through the installed console script: geometry, options, bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cli.clihelpers import assert_clean_error, run


def ball_volume(shape: tuple[int, int, int], centre: tuple[float, float, float], r: float) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float32)
    d2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
    rng = np.random.default_rng(0)
    img = rng.normal(0.0, 8.0, shape).astype(np.float32)
    img[d2 <= r * r] += 200.0
    return img


@pytest.fixture
def lps_nifti(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A bright ball in an LPS-oriented NIfTI (axes 0 and 1 flipped w.r.t. canonical RAS)."""
    shape = (40, 36, 16)
    img = ball_volume(shape, (12.0, 20.0, 8.0), 6.0)
    affine = np.diag([-1.5, -1.5, 2.5, 1.0])
    affine[:3, 3] = (30.0, 25.0, -10.0)
    path = tmp_path / "lps.nii.gz"
    nib.save(nib.Nifti1Image(img, affine), path)
    return path, affine


def test_segment_writes_mask_on_source_grid_with_canonical_box(
    lps_nifti: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    path, affine = lps_nifti
    # canonical RAS flips axes 0 and 1: source (12, 20) -> canonical (39-12, 35-20) = (27, 15)
    out = tmp_path / "mask.nii.gz"
    res = run("segment", path, "--box", 20, 8, 34, 22, "--slice", 8, "--output", out, "--engine", "classic")
    assert res.returncode == 0, res.stderr
    mask_img = nib.load(out)
    assert mask_img.shape == (40, 36, 16)
    np.testing.assert_allclose(mask_img.affine, affine)
    mask = np.asarray(mask_img.dataobj)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    truth = np.asarray(nib.load(path).dataobj) > 100
    dice = 2 * (truth & (mask > 0)).sum() / (truth.sum() + (mask > 0).sum())
    assert dice > 0.7, dice  # geometry check; quality is tested in tests/engines
    assert mask[:, :, 8].sum() > 0 and mask[:, :, 3].sum() > 0  # propagated off the key slice


def test_no_propagate_and_points(lps_nifti: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, _ = lps_nifti
    out = tmp_path / "m2d.nii.gz"
    res = run("segment", path, "--box", 20, 8, 34, 22, "--slice", 8, "--no-propagate", "-o", out,
              "--engine", "classic", "--quiet")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    mask = np.asarray(nib.load(out).dataobj)
    assert np.flatnonzero(mask.any(axis=(0, 1))).tolist() == [8]
    out2 = tmp_path / "pts.nii.gz"
    res = run("segment", path, "--points", 27, 15, 8, 1, "-o", out2, "--engine", "classic", "-q")
    assert res.returncode == 0, res.stderr
    assert np.asarray(nib.load(out2).dataobj)[12, 20, 8] == 1


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("--box", 20, 8, 34, 22, "--slice", 16), "slice index 16 is out of range"),
        (("--box", 20, 8, 60, 22, "--slice", 8), "outside the slice"),
        (("--box", 20, 8, 10, 22, "--slice", 8), "zero size"),
        (("--box", 20, 8, 34, 22), "--slice"),
        (("--points", 1, 2, 3), "groups of four"),
        (("--box", 20, 8, 34, 22, "--slice", 8, "--engine", "nope"), "unknown engine"),
        (("--box", 20, 8, 34, 22, "--slice", 8, "--window", "purple"), "unknown window preset"),
    ],
)
def test_bad_prompts(
    lps_nifti: tuple[Path, np.ndarray], tmp_path: Path, args: tuple[object, ...], match: str
) -> None:
    out = tmp_path / "never.nii.gz"
    res = run("segment", lps_nifti[0], *map(str, args), "-o", out)
    assert_clean_error(res, match)
    assert not out.exists()


def test_bad_files(tmp_path: Path) -> None:
    box = ("--box", "1", "1", "3", "3", "--slice", "0", "-o", str(tmp_path / "o.nii.gz"))
    assert_clean_error(run("segment", tmp_path / "missing.nii.gz", *box), "no such file")
    good = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), good)
    trunc = tmp_path / "trunc.nii.gz"
    trunc.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    assert_clean_error(run("segment", trunc, *box), "truncated")
    four = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8, 3), np.float32), np.eye(4)), four)
    assert_clean_error(run("segment", four, *box), "4D")
    two = tmp_path / "two.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8), np.float32), np.eye(4)), two)
    assert_clean_error(run("segment", two, *box), "2D")
    nan = np.ones((8, 8, 8), np.float32)
    nan[1, 2, 3] = np.nan
    nanp = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(nan, np.eye(4)), nanp)
    assert_clean_error(run("segment", nanp, *box), "NaN")
    txt = tmp_path / "notes.nii.gz"
    txt.write_bytes(gzip.compress(b"hello"))
    res = run("segment", txt, *box)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert_clean_error(run("segment", good, *box, "--max-voxels", "100"), "voxels")


def test_dicom_input_with_dicom_seg(shared_data: Path, tmp_path: Path) -> None:
    series = shared_data / "dcmqi" / "ct-3slice"
    out, seg = tmp_path / "liver.nii.gz", tmp_path / "liver_seg.dcm"
    from segloop.eval.protocol import box_from_mask, key_slice
    from segloop.io import load_label, load_volume

    vol = load_volume(series)
    truth = load_label(shared_data / "dcmqi" / "liver_seg.nrrd", vol, 1)
    z = key_slice(truth)
    x0, y0, x1, y1 = box_from_mask(truth[:, :, z])
    res = run("segment", series, "--box", x0, y0, x1, y1, "--slice", z, "-o", out, "--dicom-seg", seg,
              "--engine", "classic", "-q")
    assert res.returncode == 0, res.stderr
    img = nib.load(out)
    assert img.shape == vol.shape
    np.testing.assert_allclose(img.affine, vol.affine, atol=1e-4)
    from segloop.io import read_dicom_seg

    back = read_dicom_seg(seg, reference=vol)
    pred = vol.source_to_canonical(np.asarray(img.dataobj)) > 0
    np.testing.assert_array_equal(back.labels > 0, pred)
    dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
    assert dice > 0.8, dice


def test_readme_quickstart_case(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "liver.nii.gz"
    res = run("segment", shared_data / "totalseg/example_ct_sm.nii.gz", "--box", 44, 27, 104, 81,
              "--slice", 24, "--output", out)
    assert res.returncode == 0, res.stderr
    assert "engine auto -> " in res.stderr
    pred = np.asarray(nib.load(out).dataobj) > 0
    truth = np.asarray(nib.load(shared_data / "totalseg/example_seg.nii.gz").dataobj) == 5
    assert 2 * (pred & truth).sum() / (pred.sum() + truth.sum()) > 0.8


def test_help_and_no_command() -> None:
    res = run("--help")
    assert res.returncode == 0 and "segment" in res.stdout
    assert run().returncode == 2


def test_engine_options_are_parsed_and_checked(lps_nifti: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    from segloop.cli.segment import parse_engine_options

    assert parse_engine_options(["a=1", "b=2.5", "c=true", "d=MedSAM2_CTLesion", "fill-holes=8"]) == {
        "a": 1, "b": 2.5, "c": True, "d": "MedSAM2_CTLesion", "fill_holes": 8,
    }
    res = run("segment", lps_nifti[0], "--box", 20, 8, 34, 22, "--slice", 8, "-o", tmp_path / "o.nii.gz",
              "--engine", "classic", "--engine-opt", "bogus=1")
    assert_clean_error(res, "bogus")
    res = run("segment", lps_nifti[0], "--box", 20, 8, 34, 22, "--slice", 8, "-o", tmp_path / "o.nii.gz",
              "--engine", "classic", "--engine-opt", "novalue")
    assert_clean_error(res, "KEY=VALUE")
