"""``segloop segment`` on 2D images through the console script: size, place, colour, errors."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from cli.clihelpers import assert_clean_error, run
from segloop.engines import get_engine
from segloop.engines.image2d import colour_feature, segment_image
from segloop.io.image2d import Image2D, ImageSource, load_image2d
from segloop.types import Prompts


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def polyp_photo(h: int = 120, w: int = 160, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A red ellipse on pink 'mucosa' of about the SAME luminance: grey loses the contrast."""
    rr, cc = np.mgrid[:h, :w]
    truth = ((cc - 100) / 30.0) ** 2 + ((rr - 50) / 20.0) ** 2 <= 1
    img = np.empty((h, w, 3), np.float32)
    img[:] = (170, 120, 150)
    img[truth] = (230, 100, 110)  # luminance 0.299*230+0.587*100+0.114*110 = 140 vs 138.5
    img += np.random.default_rng(seed).normal(0, 10, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), truth


@pytest.fixture
def photo(tmp_path: Path) -> tuple[Path, np.ndarray]:
    img, truth = polyp_photo()
    path = tmp_path / "polyp.jpg"
    Image.fromarray(img).save(path, quality=95)
    return path, truth


def test_box_on_a_colour_photo_gives_a_mask_of_its_size_in_place(
    photo: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    path, truth = photo
    out = tmp_path / "mask.png"
    res = run("segment", path, "--box", 68, 28, 132, 72, "-o", out, "--engine", "classic")
    assert res.returncode == 0, res.stderr
    mask = np.asarray(Image.open(out))
    assert mask.shape == truth.shape and set(np.unique(mask)) == {0, 255}
    assert dice(mask > 0, truth) > 0.9, dice(mask > 0, truth)
    out2 = tmp_path / "labels.png"
    res = run("segment", path, "--points", 100, 50, 1, "-o", out2, "--engine", "classic",
              "--labels", "-q")
    assert res.returncode == 0, res.stderr
    m2 = np.asarray(Image.open(out2))
    assert set(np.unique(m2)) <= {0, 1} and m2[50, 100] == 1 and m2[5, 5] == 0


def test_colour_reaches_classic_as_object_likeness(photo: tuple[Path, np.ndarray]) -> None:
    path, truth = photo
    image = load_image2d(path)
    prompts = Prompts.make(box=(68, 28, 132, 72))
    feat = colour_feature(image.pixels, prompts)
    assert feat[truth].mean() > 80 and abs(feat[~truth].mean()) < 20
    grey = image.pixels.astype(float) @ [0.299, 0.587, 0.114]
    assert abs(grey[truth].mean() - grey[~truth].mean()) < 10  # what a grey conversion keeps
    mask = segment_image(get_engine("classic"), image, prompts)
    assert mask.shape == truth.shape and dice(mask, truth) > 0.9


def test_grey_xray_nifti_output_and_x_is_the_column(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    img = rng.normal(60, 5, (90, 70)).astype(np.float32)
    img[10:30, 40:60] += 120  # rows 10..29, columns 40..59: x = column
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(tmp_path / "x.png")
    out = tmp_path / "x_mask.png"
    res = run("segment", tmp_path / "x.png", "--box", 38, 8, 61, 31, "-o", out, "--engine", "classic")
    assert res.returncode == 0, res.stderr
    m = np.asarray(Image.open(out)) > 0
    truth = np.zeros_like(m)
    truth[10:30, 40:60] = True
    assert m.shape == (90, 70) and dice(m, truth) > 0.9
    # the same image as a one-slice NIfTI (canonical x along axis 0 = the column)
    nii = tmp_path / "x.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(img.T[:, :, None]), np.eye(4)), nii)
    res = run("segment", nii, "--box", 38, 8, 61, 31, "-o", tmp_path / "n.nii.gz", "--engine", "classic")
    assert res.returncode == 0, res.stderr
    mn = np.asarray(nib.load(tmp_path / "n.nii.gz").dataobj)
    assert mn.shape == (70, 90, 1) and dice(mn[:, :, 0].T > 0, truth) > 0.9


def test_bad_prompts_and_files_are_one_line_errors(photo: tuple[Path, np.ndarray],
                                                    tmp_path: Path) -> None:
    path, _ = photo
    out = tmp_path / "o.png"
    for args, match in (
        (("--box", 10, 10, 500, 50), "outside"),
        (("--box", 10, 10, 10, 50), "one voxel wide"),
        (("--box", 30, 10, 10, 50), "zero size"),
        (("--box", 10, 10, 50, 50, "--slice", 0), "no slices"),
        (("--points", 10, 10), "groups of three"),
        (("--points", 10, 10, 5), "label"),
        (("--box", 10, 10, 50, 50, "--dicom-seg", tmp_path / "s.dcm"), "needs DICOM input"),
    ):
        assert_clean_error(run("segment", path, *args, "-o", out, "--engine", "classic"), match)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(path.read_bytes()[:400])
    assert_clean_error(run("segment", cut, "--box", 1, 1, 9, 9, "-o", out, "--engine", "classic"),
                       "truncated")
    res = run("segment", path, "--box", 1, 1, 9, 9, "-o", out, "--max-voxels", 100)
    assert_clean_error(res, "above the limit")


def test_compare_with_writes_one_figure(photo: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, _ = photo
    out = tmp_path / "cmp.png"
    res = run("segment", path, "--box", 68, 28, 132, 72, "--engine", "classic",
              "--compare-with", "classic", "-o", out)
    assert res.returncode == 0, res.stderr
    fig = np.asarray(Image.open(out))
    assert fig.ndim == 3 and fig.shape[1] > 2.5 * fig.shape[0]  # three panels side by side
    nii = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), np.eye(4)), nii)
    assert_clean_error(run("segment", nii, "--box", 1, 1, 5, 5, "--slice", 1, "--engine", "classic",
                           "--compare-with", "classic", "-o", tmp_path / "x.png"), "2D images")


def test_one_click_reaches_across_a_large_object_in_a_photo() -> None:
    """Photos have no pixel size: the classic engine's mm-based reach must scale with the
    picture, so one click on a 400-px-wide object takes all of it (at 1 mm per pixel the
    click's 100 mm reach took half)."""
    h, w = 480, 640
    rr, cc = np.mgrid[:h, :w]
    truth = ((cc - 320) / 200.0) ** 2 + ((rr - 240) / 120.0) ** 2 <= 1
    img = np.empty((h, w, 3), np.float32)
    img[:] = (170, 120, 150)
    img[truth] = (230, 100, 110)
    img += np.random.default_rng(2).normal(0, 10, img.shape)
    image = Image2D(pixels=np.clip(img, 0, 255).astype(np.uint8), source=ImageSource.JPEG)
    mask = segment_image(get_engine("classic"), image, Prompts.make(points=[(320, 240)], labels=[1]))
    assert dice(mask, truth) > 0.9, dice(mask, truth)


def test_info_describes_a_picture(photo: tuple[Path, np.ndarray]) -> None:
    path, _ = photo
    res = run("info", path)
    assert res.returncode == 0, res.stderr
    assert "160 x 120 pixels, RGB (uint8)" in res.stdout and "jpeg" in res.stdout


def test_export_npy_writes_medsams_layout(tmp_path: Path) -> None:
    img = np.random.default_rng(3).normal(40, 20, (20, 16, 6)).astype(np.float32)
    img[:, :, :1] -= 1000  # air on one slice: a CT
    lab = np.zeros((20, 16, 6), np.uint8)
    lab[5:12, 4:10, 2:4] = 3
    nib.save(nib.Nifti1Image(img, np.eye(4)), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(lab, np.eye(4)), tmp_path / "lab.nii.gz")
    (tmp_path / "cases.csv").write_text("case_id,image,label,label_value,structure,modality\n"
                                        "c1,ct.nii.gz,lab.nii.gz,3,liver,CT\n")
    out = tmp_path / "npy"
    res = run("export", "npy", tmp_path / "cases.csv", "--out", out, "--size", 32)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (out / "imgs").iterdir()) == ["c1-002.npy", "c1-003.npy"]
    im, gt = np.load(out / "imgs" / "c1-002.npy"), np.load(out / "gts" / "c1-002.npy")
    assert im.shape == (32, 32, 3) and im.dtype == np.float64 and im.min() == 0 and im.max() == 1
    assert gt.shape == (32, 32) and gt.dtype == np.uint8 and set(np.unique(gt)) == {0, 1}
    # the radiological view the models see: rows = Y-1-y (label y 4..9 of 16 -> rows 6..11 ->
    # 12..23 of 32), columns = X-1-x (x 5..11 of 20 -> 8..14 -> about 13..23 of 32)
    rows, cols = np.flatnonzero(gt.any(axis=1)), np.flatnonzero(gt.any(axis=0))
    assert rows[0] == 12 and rows[-1] in (22, 23) and cols[0] in (12, 13) and cols[-1] in (22, 23)
    assert_clean_error(run("export", "npy", "--out", out), "MANIFEST or --datastore")
