"""The dev set's eleventh-pass (e) sources: cardiac, vessels, lesions and thoracic CT anatomy.

``build_devset.py`` calls :func:`build_more` after its first 23 cases. The first dev set had
brain structures, spinal cord, one brain tumour, a phantom and abdominal organs at 7.5 mm; it
had no heart, one large vessel, no lesion outside the brain and nothing thoracic, which are the
kinds issue 17 names and the checker's held-out cases include. The sources below are the public
GitHub repositories found that ship whole labelled volumes (not download scripts, not LFS or
annex pointers). Sources (``repo`` at the commit read, path, licence):

- ``wasserth/TotalSegmentator`` @ 0e65a448d557382b1e925276212b3bec7f5aff83 (Apache-2.0),
  ``tests/reference_files/aorta_report/test_result/models/``: ``ct_cropped.nii.gz`` (contrast
  CT angiography of the chest and upper abdomen, 120 x 126 x 164 at 1.5 mm isotropic, with an
  aortic dissection: the report has true and false lumen masks) with ``aorta``,
  ``aorta_false_lumen``, ``brachiocephalic_trunk``, ``subclavian_artery_left`` and
  ``vertebrae_T12`` masks; and
  ``tests/reference_files/pulmonary_report/models/``: ``heart.nii.gz`` and
  ``pulmonary_artery.nii.gz``, on other crops of the same scan (their ``ct_cropped`` matches the
  aorta crop voxel for voxel up to rounding), moved onto the aorta crop's grid through the
  affines. All masks are TotalSegmentator model outputs (the test suite's expected results),
  not hand labels: the same standing as ``../shared/data/totalseg``.
- ``deepmedic/deepmedic`` @ e10ba7c3570d06194f5dadca91d99d5e7bba7de5, ``examples/
  dataForExamples/brats2015TrainingData/*/brats_2013_pat000N_1/`` (BraTS 2015 training data
  as redistributed by DeepMedic, CC BY-NC-SA 3.0 CH; the code is BSD-3): FLAIR and T1c MR at
  1 mm isotropic (240 x 240 x 155, intensities normalised within the brain by DeepMedic) with
  the expert ``OTMultiClass`` labels (1 necrosis, 2 oedema, 3 non-enhancing, 4 enhancing). The
  targets are the BraTS regions a user boxes: the whole tumour (labels 1-4) on FLAIR and the
  tumour core (1, 3, 4) on T1c.
- ``vmtk/vmtk-test-data`` @ 7f5abc07a33e1037a106fa4e0ac6c320adb1baa1 (the VMTK test data of
  the BSD-3 VMTK project): ``input/aorta.mha`` (the abdominal aorta and its bifurcation in a
  coronal slab, 157 x 393 x 34 at 0.88 x 0.88 x 1.5 mm; the source does not name the modality,
  and the look, a bright lumen on a dark background with no bone, is contrast MR angiography,
  so it is listed as MR) and ``input/aorta-final-levelset.mha``; the reference is the level
  set's inside (phi < 0), a semi-automatic VMTK segmentation, not a hand label.
- Thick-slice variant made here: the CT angiography resampled to 5 mm slices (the same
  ``_reslice`` as the 7.5 mm CT of ``build_devset.py``), for the heart and the aorta.

Nothing is tuned to these cases; one structure per case, picked before measuring.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

__all__ = ["BRATS_CASES", "CTA_LABELS", "brats_target", "build_more", "levelset_inside",
           "onto_grid"]

_TS = "wasserth/TotalSegmentator"
_DM = "deepmedic/deepmedic"
_VMTK = "vmtk/vmtk-test-data"
_AORTA_DIR = "tests/reference_files/aorta_report/test_result/models"
_PULM_DIR = "tests/reference_files/pulmonary_report/models"
_BRATS_DIR = "examples/dataForExamples/brats2015TrainingData"

# (label value in the composed CT label map, source folder, mask file, structure name). The
# order is the priority where two model masks claim a voxel: the first one keeps it. The
# pulmonary report's heart mask holds 13,019 of the pulmonary artery's 14,261 voxels (the
# trunk), so the heart comes last: it keeps the chambers and the wall, as TotalSegmentator's
# own ``heart`` class does, and the pulmonary artery stays a vessel of its own.
CTA_LABELS: list[tuple[int, str, str, str]] = [
    (2, _AORTA_DIR, "aorta.nii.gz", "aorta"),
    (3, _PULM_DIR, "pulmonary_artery.nii.gz", "pulmonary artery"),
    (4, _AORTA_DIR, "brachiocephalic_trunk.nii.gz", "brachiocephalic trunk"),
    (5, _AORTA_DIR, "subclavian_artery_left.nii.gz", "left subclavian artery"),
    (6, _AORTA_DIR, "vertebrae_T12.nii.gz", "vertebra T12"),
    (1, _PULM_DIR, "heart.nii.gz", "heart"),
]
_CTA_CASES = [(1, "heart"), (2, "aorta"), (3, "pulmonary_artery"), (4, "brachiocephalic_trunk"),
              (5, "subclavian_artery_l"), (6, "vertebra_t12")]
_CTA5_CASES = [(1, "heart"), (2, "aorta")]

# (split folder, patient folder, target, image sequence)
BRATS_CASES: list[tuple[str, str, str, str]] = [
    ("test", "brats_2013_pat0001_1", "whole", "Flair"),
    ("test", "brats_2013_pat0002_1", "whole", "Flair"),
    ("validation", "brats_2013_pat0003_1", "whole", "Flair"),
    ("validation", "brats_2013_pat0004_1", "core", "T1c"),
    ("train", "brats_2013_pat0005_1", "core", "T1c"),
]

Row = tuple[str, str, str, int, str, str]
Reader = Callable[[Path, str, str, Path], Path]
Reslicer = Callable[[nib.Nifti1Image, nib.Nifti1Image, float, list[int]],
                    tuple[nib.Nifti1Image, nib.Nifti1Image]]


def _load(path: Path) -> nib.Nifti1Image:
    """``nib.load`` narrowed to NIfTI: every source here is NIfTI, and a different format would
    mean the source changed under the builder."""
    img = nib.load(path)
    if not isinstance(img, nib.Nifti1Image):
        raise SystemExit(f"{path}: expected NIfTI, got {type(img).__name__}")
    return img


def onto_grid(mask: nib.Nifti1Image, ref: nib.Nifti1Image) -> np.ndarray:
    """``mask`` sampled (nearest voxel) at every voxel centre of ``ref``; 0 outside ``mask``.

    TotalSegmentator's reports store each mask on the crop its own step used, so the heart
    lies on a larger grid than the CT crop it is read with; both share one scanner space."""
    m = np.asarray(mask.dataobj)
    ijk = np.indices(ref.shape[:3]).reshape(3, -1)
    world = ref.affine[:3, :3] @ ijk + ref.affine[:3, 3:4]
    src = np.linalg.inv(mask.affine)
    idx = np.rint(src[:3, :3] @ world + src[:3, 3:4]).astype(np.int64)
    inside = np.all((idx >= 0) & (idx < np.array(m.shape[:3])[:, None]), axis=0)
    out = np.zeros(ijk.shape[1], dtype=m.dtype)
    out[inside] = m[idx[0, inside], idx[1, inside], idx[2, inside]]
    return out.reshape(ref.shape[:3])


def brats_target(ot: np.ndarray, target: str) -> np.ndarray:
    """The BraTS region as a 0/1 map: ``whole`` = labels 1-4, ``core`` = 1, 3 and 4 (oedema out)."""
    if target == "whole":
        return np.asarray(ot > 0, dtype=np.uint8)
    if target == "core":
        return np.isin(ot, (1, 3, 4)).astype(np.uint8)
    raise ValueError(f"unknown BraTS target {target!r}")


def levelset_inside(phi: np.ndarray) -> np.ndarray:
    """A level set's inside (phi < 0, VMTK's convention) as a 0/1 map."""
    return np.asarray(phi < 0, dtype=np.uint8)


def _cta(mirrors: Path, out: Path, read: Reader, reslice: Reslicer) -> list[Row]:
    d = out / "cta"
    ct = _load(read(mirrors, _TS, f"{_AORTA_DIR}/ct_cropped.nii.gz", d / "cta_ct.nii.gz"))
    lab = np.zeros(ct.shape[:3], dtype=np.int16)
    for value, folder, name, _ in CTA_LABELS:
        m = onto_grid(_load(read(mirrors, _TS, f"{folder}/{name}", d / "src" / name)), ct)
        lab[(m > 0) & (lab == 0)] = value
    labels = nib.Nifti1Image(lab, ct.affine)
    nib.save(labels, d / "cta_labels.nii.gz")
    fl = _load(read(mirrors, _TS, f"{_AORTA_DIR}/aorta_false_lumen.nii.gz",
                       d / "cta_false_lumen.nii.gz"))
    names = {v: s for v, _, _, s in CTA_LABELS}
    rows: list[Row] = [(f"cta_{cid}", "cta/cta_ct.nii.gz", "cta/cta_labels.nii.gz", v, names[v],
                        "CT") for v, cid in _CTA_CASES]
    if int(np.count_nonzero(np.asarray(fl.dataobj))) == 0:
        raise SystemExit("the aorta report's false lumen mask is empty")
    rows.append(("cta_aorta_false_lumen", "cta/cta_ct.nii.gz", "cta/cta_false_lumen.nii.gz", 1,
                 "aortic dissection false lumen", "CT"))
    ci, cl = reslice(ct, labels, 5.0, [v for v, _ in _CTA5_CASES])
    nib.save(ci, d / "cta_ct_5mm.nii.gz")
    nib.save(cl, d / "cta_labels_5mm.nii.gz")
    rows += [(f"cta5_{cid}", "cta/cta_ct_5mm.nii.gz", "cta/cta_labels_5mm.nii.gz", v, names[v],
              "CT") for v, cid in _CTA5_CASES]
    return rows


def _brats(mirrors: Path, out: Path, read: Reader) -> list[Row]:
    rows: list[Row] = []
    for split, pat, target, seq in BRATS_CASES:
        d = out / "brats" / pat
        src = f"{_BRATS_DIR}/{split}/{pat}"
        read(mirrors, _DM, f"{src}/{seq}_subtrMeanDivStd.nii.gz", d / f"{seq.lower()}.nii.gz")
        ot = _load(read(mirrors, _DM, f"{src}/OTMultiClass.nii.gz", d / "ot.nii.gz"))
        m = brats_target(np.asarray(ot.dataobj), target)
        nib.save(nib.Nifti1Image(m, ot.affine), d / f"{target}.nii.gz")
        num = pat.split("_")[2][-2:]
        name = "whole brain tumour (FLAIR)" if target == "whole" else "brain tumour core (T1c)"
        rows.append((f"brats{num}_tumour_{target}", f"brats/{pat}/{seq.lower()}.nii.gz",
                     f"brats/{pat}/{target}.nii.gz", 1, name, "MR"))
    return rows


def _vmtk(mirrors: Path, out: Path, read: Reader) -> list[Row]:
    d = out / "vmtk"
    img = sitk.ReadImage(str(read(mirrors, _VMTK, "input/aorta.mha", d / "aorta.mha")))
    phi = sitk.ReadImage(str(read(mirrors, _VMTK, "input/aorta-final-levelset.mha",
                                  d / "aorta-final-levelset.mha")))
    lab = sitk.GetImageFromArray(levelset_inside(sitk.GetArrayFromImage(phi)))
    lab.CopyInformation(phi)
    sitk.WriteImage(img, str(d / "aorta.nii.gz"))
    sitk.WriteImage(lab, str(d / "aorta_levelset.nii.gz"))
    return [("vmtk_aorta", "vmtk/aorta.nii.gz", "vmtk/aorta_levelset.nii.gz", 1,
             "abdominal aorta (VMTK level set)", "MR")]


def build_more(mirrors: Path, out: Path, read: Reader, reslice: Reslicer) -> list[Row]:
    """Write the new sources' files under ``out``; return their manifest rows
    (case_id, image, label, label_value, structure, modality)."""
    return [*_cta(mirrors, out, read, reslice), *_brats(mirrors, out, read),
            *_vmtk(mirrors, out, read)]
