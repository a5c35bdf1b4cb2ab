"""The dev set's eleventh-pass (e) sources (``benchmarks/devset_more.py``), on small generated
files laid out like the source repositories: no network and no mirrors needed. They pin what
the builder reads from each source (masks moved between crops through the affines, the heart
yielding the pulmonary trunk, the BraTS regions, a level set's inside) so that a change to a
source's parsing shows here rather than as a silently different benchmark."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def mods() -> Iterator[tuple[ModuleType, ModuleType]]:
    sys.path.insert(0, str(BENCH))
    try:
        import build_devset
        import devset_more
        yield build_devset, devset_more
    finally:
        sys.path.remove(str(BENCH))


def _aff(origin: tuple[float, float, float], dz: float = 1.5) -> np.ndarray:
    """TotalSegmentator's layout: x and y flipped (LPS-like), 1.5 mm in plane."""
    a = np.diag([-1.5, -1.5, dz, 1.0])
    a[:3, 3] = origin
    return a


def test_onto_grid_moves_a_mask_between_crops(mods: tuple[ModuleType, ModuleType]) -> None:
    _, dm = mods
    ref = nib.Nifti1Image(np.zeros((6, 5, 4), np.int16), _aff((10.0, 20.0, 30.0)))
    big = np.zeros((12, 9, 10), np.uint8)
    # the big crop starts 3 voxels further +x (world -x is +i) and 2 slices lower
    big[3 + 1, 0 + 2, 2 + 3] = 1
    big[0, 0, 0] = 1  # outside the reference crop: dropped
    mask = nib.Nifti1Image(big, _aff((10.0 + 4.5, 20.0, 30.0 - 3.0)))
    out = dm.onto_grid(mask, ref)
    assert out.shape == (6, 5, 4)
    assert np.argwhere(out).tolist() == [[1, 2, 3]]


def test_brats_regions_and_levelset(mods: tuple[ModuleType, ModuleType]) -> None:
    _, dm = mods
    ot = np.array([0, 1, 2, 3, 4])
    assert dm.brats_target(ot, "whole").tolist() == [0, 1, 1, 1, 1]
    assert dm.brats_target(ot, "core").tolist() == [0, 1, 0, 1, 1]
    with pytest.raises(ValueError):
        dm.brats_target(ot, "oedema")
    assert dm.levelset_inside(np.array([-1.0, 0.0, 2.0])).tolist() == [1, 0, 0]


def _save(img: nib.Nifti1Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)


def _fake_sources(root: Path, dm: ModuleType) -> None:
    """Plain-clone layouts (``root/NAME/path``) of the three repositories, a few voxels each."""
    ts = root / "TotalSegmentator"
    aff = _aff((0.0, 0.0, 0.0))
    shape = (8, 8, 12)
    ct = np.full(shape, -800, np.int16)
    _save(nib.Nifti1Image(ct, aff), ts / dm._AORTA_DIR / "ct_cropped.nii.gz")
    blank = np.zeros(shape, np.uint8)
    masks = {name: blank.copy() for _, _, name, _ in dm.CTA_LABELS}
    masks["aorta.nii.gz"][2, 2, :] = 1
    masks["pulmonary_artery.nii.gz"][5, 5, 4:8] = 1
    masks["brachiocephalic_trunk.nii.gz"][2, 3, 10:] = 1
    masks["subclavian_artery_left.nii.gz"][3, 2, 10:] = 1
    masks["vertebrae_T12.nii.gz"][6, 1, 0:3] = 1
    heart = np.zeros((10, 10, 12), np.uint8)  # a larger crop, one voxel further +i and +j
    heart[5:8, 5:8, 3:9] = 1  # covers the pulmonary trunk at [4:7, 4:7] of the CT grid
    for _, folder, name, _ in dm.CTA_LABELS:
        if name == "heart.nii.gz":
            _save(nib.Nifti1Image(heart, _aff((1.5, 1.5, 0.0))), ts / folder / name)
        else:
            _save(nib.Nifti1Image(masks[name], aff), ts / folder / name)
    fl = blank.copy()
    fl[2, 2, 1:5] = 1
    _save(nib.Nifti1Image(fl, aff), ts / dm._AORTA_DIR / "aorta_false_lumen.nii.gz")
    dmr = root / "deepmedic" / dm._BRATS_DIR
    for split, pat, _, seq in dm.BRATS_CASES:
        ot = np.zeros((6, 6, 6), np.int16)
        ot[1:5, 1:5, 1:5] = 2
        ot[2:4, 2:4, 2:4] = 4
        ot[2, 2, 2] = 1
        _save(nib.Nifti1Image(ot, np.eye(4)), dmr / split / pat / "OTMultiClass.nii.gz")
        _save(nib.Nifti1Image(ot.astype(np.float32), np.eye(4)),
              dmr / split / pat / f"{seq}_subtrMeanDivStd.nii.gz")
    vm = root / "vmtk-test-data" / "input"
    vm.mkdir(parents=True)
    phi = np.ones((4, 5, 6), np.float32)
    phi[1:3, 2:4, 2:5] = -1.0
    for name, arr in (("aorta.mha", phi * 100.0), ("aorta-final-levelset.mha", phi)):
        im = sitk.GetImageFromArray(arr)
        im.SetSpacing((0.88, 0.88, 1.5))
        sitk.WriteImage(im, str(vm / name))


def test_build_more_reads_every_source(mods: tuple[ModuleType, ModuleType],
                                       tmp_path: Path) -> None:
    bd, dm = mods
    _fake_sources(tmp_path / "m", dm)
    out = tmp_path / "out"
    rows = dm.build_more(tmp_path / "m", out, bd._read, bd._reslice)
    ids = [r[0] for r in rows]
    assert ids == ["cta_heart", "cta_aorta", "cta_pulmonary_artery", "cta_brachiocephalic_trunk",
                   "cta_subclavian_artery_l", "cta_vertebra_t12", "cta_aorta_false_lumen",
                   "cta5_heart", "cta5_aorta", "brats01_tumour_whole", "brats02_tumour_whole",
                   "brats03_tumour_whole", "brats04_tumour_core", "brats05_tumour_core",
                   "vmtk_aorta"]
    for cid, image, label, value, _, modality in rows:
        lab = np.asarray(nib.load(out / label).dataobj)
        assert (lab == value).any(), cid
        assert nib.load(out / image).shape[:3] == lab.shape[:3], cid
        assert modality in ("CT", "MR")
    cta = np.asarray(nib.load(out / "cta" / "cta_labels.nii.gz").dataobj)
    # the heart (moved one voxel) yields the pulmonary trunk and keeps the rest of its block
    assert int((cta == 3).sum()) == 4 and int((cta == 1).sum()) == 27 * 2 - 4
    assert int((cta == 2).sum()) == 12 and int((cta == 6).sum()) == 3
    brats = {r[0]: np.asarray(nib.load(out / r[2]).dataobj) for r in rows if "brats" in r[0]}
    assert int(brats["brats01_tumour_whole"].sum()) == 64
    assert int(brats["brats04_tumour_core"].sum()) == 8
    vm = np.asarray(nib.load(out / "vmtk" / "aorta_levelset.nii.gz").dataobj)
    assert int(vm.sum()) == 2 * 2 * 3
    assert np.allclose(nib.load(out / "vmtk" / "aorta.nii.gz").header.get_zooms(), (0.88, 0.88, 1.5))


def test_main_writes_the_new_rows_after_the_old(mods: tuple[ModuleType, ModuleType],
                                               tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    bd, dm = mods
    old = [bd.Case("old_case", "a.nii.gz", "b.nii.gz", 1, "x", "MR")]

    def fake_build(mirrors: Path, shared: Path, out: Path) -> list[object]:
        return [*old, *[bd.Case(*r) for r in dm.build_more(mirrors, out, bd._read, bd._reslice)]]

    _fake_sources(tmp_path / "m", dm)
    monkeypatch.setattr(bd, "build", fake_build)
    assert bd.main(["--mirrors", str(tmp_path / "m"), "--out", str(tmp_path / "o")]) == 0
    with (tmp_path / "o" / "devset.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["case_id"] for r in rows][:2] == ["old_case", "cta_heart"]
    assert len(rows) == 16
