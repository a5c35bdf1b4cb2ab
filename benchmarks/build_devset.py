"""Build the classic engine's wider development set (issue 17) outside the repository.

Writes NIfTI images and labels plus a manifest ``devset.csv`` (the columns of
``../shared/data/cases.csv``: case_id, image, label, label_value, structure, modality; paths
relative to the manifest) into ``--out`` (default ``/work/devdata``). Nothing is copied into
the repository. Sources (public GitHub repositories, read from git directories under
``--mirrors``, laid out ``OWNER+NAME/repo`` as the team's fetch tool leaves them, or from plain
``git clone`` checkouts at ``--mirrors/NAME``):

- ``Jfortin1/EveTemplate`` (GPL-2; the JHU "Eve" single-subject MNI template, Oishi et al.
  2009): ``inst/extdata/JHU_MNI_SS_T1_Brain.nii.gz`` (T1 MR, 1 mm isotropic, skull-stripped),
  ``JHU_MNI_SS_WMPM_Type-I.nii.gz`` (hand-drawn white-matter parcellation map with deep grey
  nuclei: hippocampus, amygdala, caudate, putamen, thalamus, pons) and
  ``JHU_MNI_SS_T1_Brain_FAST_seg.nii.gz`` (FSL FAST tissue classes; the lateral ventricles
  are taken as the largest CSF component more than 15 mm inside the brain mask).
- ``spinalcordtoolbox/sct_testing_data`` (MIT): ``t1/t1w.nii.gz`` + ``t1w_seg-manual``
  (cord, T1 MR 1 mm isotropic) and ``mt/mt1.nii.gz`` + ``mt1_seg`` (cord, 0.84 mm in plane,
  17 mm slices).
- ``AIM-Harvard/pyradiomics`` (BSD-3-Clause): ``data/brain2_image.nrrd`` + label (brain
  tumour, MR) and ``data/prostate_phantom_subvolume.nrrd`` + label (prostate phantom, MR,
  0.5 x 0.5 x 3 mm; its label values 8 and 9, the two large structures; label 1 is a few
  scattered voxels and is left out).
- Eleventh pass (e), in ``devset_more.py`` (its docstring has the commits and paths):
  ``wasserth/TotalSegmentator`` (Apache-2.0; CT angiography at 1.5 mm with the heart, aorta,
  pulmonary artery, two aortic branches, T12 and the dissection's false lumen, model masks),
  ``deepmedic/deepmedic`` (BraTS 2015 brain tumours, CC BY-NC-SA 3.0, expert labels) and
  ``vmtk/vmtk-test-data`` (BSD-3; abdominal aorta MR angiography with a VMTK level set), plus the CT
  angiography at 5 mm slices.
- Thick-slice variants made here (documented resampling, not new data): the Eve T1 averaged
  over 5 axial slices (1 x 1 x 5 mm, labels by majority) and the TotalSegmentator example CT of
  ``../shared/data/totalseg`` (Apache-2.0) resampled from 3 mm to 7.5 mm slices (linear for the
  image, a label kept where its interpolated indicator is at least 0.5).

Usage (from the repo root)::

    PYTHONPATH=src .venv/bin/python benchmarks/build_devset.py --mirrors /work/.mirror \\
        --shared ../shared/data --out /work/devdata
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from devset_more import build_more
from scipy import ndimage as ndi

__all__ = ["Case", "main"]


@dataclass(frozen=True)
class Case:
    """One manifest row."""

    case_id: str
    image: str
    label: str
    label_value: int
    structure: str
    modality: str


_EVE = "Jfortin1/EveTemplate"
_SCT = "spinalcordtoolbox/sct_testing_data"
_PYRAD = "AIM-Harvard/pyradiomics"

# (label value in WMPM Type-I, structure name, case id suffix)
_EVE_LABELS = [
    (27, "hippocampus left", "hippocampus_l"),
    (115, "hippocampus right", "hippocampus_r"),
    (26, "amygdala left", "amygdala_l"),
    (59, "caudate nucleus left", "caudate_l"),
    (148, "putamen right", "putamen_r"),
    (61, "thalamus left", "thalamus_l"),
    (152, "pons right", "pons_r"),
]
_EVE_THICK = [(115, "hippocampus right", "hippocampus_r"), (59, "caudate nucleus left", "caudate_l"),
              (149, "thalamus right", "thalamus_r")]
_VENTRICLES = 200  # label value given to the derived lateral ventricles
_CT_THICK = [(5, "liver"), (1, "spleen"), (2, "right kidney"), (6, "stomach"), (52, "aorta"),
             (63, "inferior vena cava")]


def _read(mirrors: Path, repo: str, path: str, dest: Path) -> Path:
    """Copy ``path`` of ``repo`` (a fetched git directory or a plain clone) to ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    git_dir = mirrors / repo.replace("/", "+") / "repo"
    if git_dir.is_dir():
        blob = subprocess.run(["git", f"--git-dir={git_dir}", "show", f"HEAD:{path}"],
                              check=True, capture_output=True).stdout
        dest.write_bytes(blob)
    else:
        dest.write_bytes((mirrors / repo.split("/")[1] / path).read_bytes())
    return dest


def _thicken(img: nib.Nifti1Image, lab: nib.Nifti1Image, factor: int,
             values: list[int]) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """Average ``factor`` consecutive slices along the last axis; labels by majority."""
    a = np.asarray(img.dataobj, dtype=np.float32)
    lb = np.asarray(lab.dataobj).astype(np.int32)
    nz = a.shape[2] // factor
    a = a[:, :, :nz * factor].reshape(a.shape[0], a.shape[1], nz, factor).mean(axis=3)
    out = np.zeros(a.shape, dtype=np.int16)
    for v in values:
        m = (lb[:, :, :nz * factor] == v).reshape(a.shape[0], a.shape[1], nz, factor).mean(axis=3)
        out[m >= 0.5] = v
    aff = img.affine.copy()
    aff[:3, 2] *= factor
    aff[:3, 3] += img.affine[:3, 2] * (factor - 1) / 2.0
    return nib.Nifti1Image(a, aff), nib.Nifti1Image(out, aff)


def _reslice(img: nib.Nifti1Image, lab: nib.Nifti1Image, new_dz: float,
             values: list[int]) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """Resample along the last axis to ``new_dz`` mm (linear image, 0.5-indicator labels)."""
    a = np.asarray(img.dataobj, dtype=np.float32)
    lb = np.asarray(lab.dataobj).astype(np.int32)
    dz = float(img.header.get_zooms()[2])
    nz = int(np.floor((a.shape[2] - 1) * dz / new_dz)) + 1
    zs = np.arange(nz) * new_dz / dz
    grid = np.meshgrid(np.arange(a.shape[0]), np.arange(a.shape[1]), zs, indexing="ij")
    a2 = ndi.map_coordinates(a, grid, order=1)
    out = np.zeros(a2.shape, dtype=np.int16)
    for v in values:
        out[ndi.map_coordinates((lb == v).astype(np.float32), grid, order=1) >= 0.5] = v
    aff = img.affine.copy()
    aff[:3, 2] *= new_dz / dz
    return nib.Nifti1Image(a2, aff), nib.Nifti1Image(out, aff)


def _ventricles(seg: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """The lateral ventricles: the largest CSF (FAST class 1) component deep in the brain."""
    deep = ndi.distance_transform_edt(brain) > 15.0
    csf = (seg == 1) & deep
    lab, n = ndi.label(csf)
    if n == 0:
        raise SystemExit("no CSF found deep in the Eve brain mask")
    sizes = np.bincount(lab.ravel())[1:]
    return np.asarray(lab == int(np.argmax(sizes)) + 1)


def build(mirrors: Path, shared: Path, out: Path) -> list[Case]:
    """Write every case's files under ``out``; return the manifest rows."""
    cases: list[Case] = []
    # --- Eve T1, 1 mm isotropic, and its 5 mm thick-slice variant
    t1 = nib.load(_read(mirrors, _EVE, "inst/extdata/JHU_MNI_SS_T1_Brain.nii.gz",
                        out / "eve" / "eve_t1.nii.gz"))
    wmpm_path = _read(mirrors, _EVE, "inst/extdata/JHU_MNI_SS_WMPM_Type-I.nii.gz",
                      out / "eve" / "wmpm_type1.nii.gz")
    fast = _read(mirrors, _EVE, "inst/extdata/JHU_MNI_SS_T1_Brain_FAST_seg.nii.gz",
                 out / "eve" / "fast_seg.nii.gz")
    wmpm = nib.load(wmpm_path)
    lab = np.asarray(wmpm.dataobj).astype(np.int16)
    brain = np.asarray(t1.dataobj) > 0
    lab[_ventricles(np.asarray(nib.load(fast).dataobj), brain) & (lab == 0)] = _VENTRICLES
    labels = nib.Nifti1Image(lab, wmpm.affine)
    nib.save(labels, out / "eve" / "eve_labels.nii.gz")
    for v, name, cid in [*_EVE_LABELS, (_VENTRICLES, "lateral ventricles", "ventricles")]:
        cases.append(Case(f"eve1mm_{cid}", "eve/eve_t1.nii.gz", "eve/eve_labels.nii.gz", v, name, "MR"))
    thick_vals = [v for v, _, _ in _EVE_THICK] + [_VENTRICLES]
    ti, tl = _thicken(t1, labels, 5, thick_vals)
    nib.save(ti, out / "eve" / "eve_t1_5mm.nii.gz")
    nib.save(tl, out / "eve" / "eve_labels_5mm.nii.gz")
    for v, name, cid in [*_EVE_THICK, (_VENTRICLES, "lateral ventricles", "ventricles")]:
        cases.append(Case(f"eve5mm_{cid}", "eve/eve_t1_5mm.nii.gz", "eve/eve_labels_5mm.nii.gz", v,
                          name, "MR"))
    # --- SCT cord: T1 1 mm isotropic, MT 17 mm slices
    for sub, img, seg, cid in (("t1", "t1w", "t1w_seg-manual", "sct_t1_cord"),
                               ("mt", "mt1", "mt1_seg", "sct_mt_cord")):
        _read(mirrors, _SCT, f"{sub}/{img}.nii.gz", out / "sct" / f"{img}.nii.gz")
        _read(mirrors, _SCT, f"{sub}/{seg}.nii.gz", out / "sct" / f"{seg}.nii.gz")
        cases.append(Case(cid, f"sct/{img}.nii.gz", f"sct/{seg}.nii.gz", 1, "spinal cord", "MR"))
    # --- pyradiomics: a second brain tumour and the prostate phantom
    for img, seg, cid, name in (("brain2_image.nrrd", "brain2_label.nrrd", "pyrad_brain2_tumour",
                                 "brain tumour"),
                                ("prostate_phantom_subvolume.nrrd",
                                 "prostate_phantom_subvolume-label.nrrd", "pyrad_prostate",
                                 "prostate (phantom)")):
        _read(mirrors, _PYRAD, f"data/{img}", out / "pyradiomics" / img)
        _read(mirrors, _PYRAD, f"data/{seg}", out / "pyradiomics" / seg)
        if cid == "pyrad_prostate":
            # its label 1 is a few scattered voxels; 8 and 9 are the two large structures
            # (their anatomical names are not documented in the source)
            for v in (8, 9):
                cases.append(Case(f"{cid}_{v}", f"pyradiomics/{img}", f"pyradiomics/{seg}", v,
                                  f"{name} structure {v}", "MR"))
            continue
        cases.append(Case(cid, f"pyradiomics/{img}", f"pyradiomics/{seg}", 1, name, "MR"))
    # --- TotalSegmentator example CT resliced to 7.5 mm
    ct = nib.load(shared / "totalseg" / "example_ct_sm.nii.gz")
    ctl = nib.load(shared / "totalseg" / "example_seg.nii.gz")
    ci, cl = _reslice(ct, ctl, 7.5, [v for v, _ in _CT_THICK])
    (out / "ct75").mkdir(parents=True, exist_ok=True)
    nib.save(ci, out / "ct75" / "ct_7p5mm.nii.gz")
    nib.save(cl, out / "ct75" / "seg_7p5mm.nii.gz")
    for v, name in _CT_THICK:
        cases.append(Case(f"ct75_{name.replace(' ', '_')}", "ct75/ct_7p5mm.nii.gz",
                          "ct75/seg_7p5mm.nii.gz", v, name, "CT"))
    # --- eleventh pass (e): cardiac, vessels, lesions, thoracic CT anatomy
    cases += [Case(*row) for row in build_more(mirrors, out, _read, _reslice)]
    return cases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mirrors", default="/work/.mirror")
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
    ap.add_argument("--out", default="/work/devdata")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cases = build(Path(args.mirrors), Path(args.shared), out)
    with (out / "devset.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "image", "label", "label_value", "structure", "modality"])
        for c in cases:
            w.writerow([c.case_id, c.image, c.label, c.label_value, c.structure, c.modality])
    print(f"{len(cases)} cases -> {out / 'devset.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
