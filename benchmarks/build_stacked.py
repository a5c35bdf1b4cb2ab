"""A dev manifest of targets stacked along z against copies of themselves, and controls.

The twelfth pass's `sheet_cover` rule (a thin dark sheet across the target's columns ends the
tracking) was picked on three CT vertebrae, two of them held-out cases. This manifest widens
the test without the held-out cases: other vertebral levels, ribs and an intervertebral disc,
plus tubes, organs and a long bone not used in any manifest, to see that the rule does not cut
them. Label values already used for the same volume in ``benchmarks/heldout_cases.csv`` or
``../shared/data/cases.csv`` are left out (the example CT's L1 and L2 in particular, also on
the full-length CT below, which is the same patient's spine).

Sources:

- ``wasserth/TotalSegmentator`` (Apache-2.0), read from the team's mirror
  (``OWNER+NAME/repo`` git directory under ``--mirrors``):
  ``tests/reference_files/example_ct.nii.gz`` (the full-length example CT, 122 x 101 x 112 at
  3 mm; ``../shared/data/totalseg/example_ct_sm.nii.gz`` is its top 30 slices) and
  ``tests/reference_files/spine_report/example_ct_report/totalseg.nii.gz`` (TotalSegmentator's
  vertebra classes on it: 26 S1, 27 L5, 28 L4, 29 L3, 30 L2, 31 L1, 32 T12, 33 T11).
- ``../shared/data/totalseg`` (same repository): the example CT, DICOM CT and MR label maps
  (TotalSegmentator v2 class numbers: 9 left adrenal, 15 colon (MR), 20 intervertebral discs
  (MR), 32 T12, 33 T11, 64 portal and splenic vein, 69 left humerus, 86/87 autochthon L/R,
  89 right iliopsoas, 92-103 left ribs 1-12, 104-115 right ribs 1-12).
- Derived here: one intervertebral disc of the MR (the discs label split into connected
  components; the one wholly inside the volume, z 9-12), written as its own label file.

Nothing is tuned to these cases; the list was fixed before measuring.

Usage (repo root)::

    PYTHONPATH=src .venv/bin/python benchmarks/build_stacked.py --out /work/devdata2
    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_classic.py \\
        /work/devdata2/stacked.csv --clicks 5 [--opt sheet_cover=0.5]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_devset import _read

_TS = "wasserth/TotalSegmentator"
_FIELDS = ["case_id", "image", "label", "label_value", "structure", "modality", "kind"]

# (case, image, label, value, structure, modality, kind); paths relative to --out, where
# "SH/" stands for the shared data folder and "ST/" for the files this script writes.
_CT_SM = ("SH/totalseg/example_ct_sm.nii.gz", "SH/totalseg/example_seg.nii.gz")
_CT_D = ("SH/totalseg/example_ct_dicom", "SH/totalseg/example_seg_dicom.nii.gz")
_MR = ("SH/totalseg/example_mr_sm.nii.gz", "SH/totalseg/example_seg_mr.nii.gz")
_CT_L = ("ST/example_ct.nii.gz", "ST/example_ct_spine.nii.gz")
CASES: list[tuple[str, str, str, str, str, str, str]] = [
    ("ctl_vert_l3", *_CT_L, "29", "vertebra L3", "CT", "stacked"),
    ("ctl_vert_l4", *_CT_L, "28", "vertebra L4", "CT", "stacked"),
    ("ctl_vert_l5", *_CT_L, "27", "vertebra L5", "CT", "stacked"),
    ("ctl_vert_s1", *_CT_L, "26", "vertebra S1", "CT", "stacked"),
    ("ctsm_vert_t12", *_CT_SM, "32", "vertebra T12", "CT", "stacked"),
    ("ctd_vert_t11", *_CT_D, "33", "vertebra T11", "CT", "stacked"),
    ("ctsm_rib_l10", *_CT_SM, "101", "rib left 10", "CT", "stacked"),
    ("ctd_rib_l8", *_CT_D, "99", "rib left 8", "CT", "stacked"),
    ("ctd_rib_r9", *_CT_D, "112", "rib right 9", "CT", "stacked"),
    ("mr_disc", "SH/totalseg/example_mr_sm.nii.gz", "ST/mr_disc.nii.gz", "1",
     "intervertebral disc", "MR", "stacked"),
    ("ctsm_portal_vein", *_CT_SM, "64", "portal and splenic vein", "CT", "control"),
    ("ctsm_iliopsoas_r", *_CT_SM, "89", "iliopsoas right", "CT", "control"),
    ("ctsm_adrenal_l", *_CT_SM, "9", "left adrenal gland", "CT", "control"),
    ("ctsm_autochthon_r", *_CT_SM, "87", "autochthon right", "CT", "control"),
    ("ctd_portal_vein", *_CT_D, "64", "portal and splenic vein", "CT", "control"),
    ("ctd_humerus_l", *_CT_D, "69", "humerus left", "CT", "control"),
    ("ctd_autochthon_l", *_CT_D, "86", "autochthon left", "CT", "control"),
    ("mr_colon", *_MR, "15", "colon", "MR", "control"),
]


def one_disc(discs: np.ndarray) -> np.ndarray:
    """The largest connected component of ``discs`` that touches neither end slice."""
    lab, n = ndi.label(discs)
    best, size = 0, 0
    for i in range(1, n + 1):
        zs = np.nonzero((lab == i).any(axis=(0, 1)))[0]
        if zs[0] == 0 or zs[-1] == discs.shape[2] - 1:
            continue
        count = int((lab == i).sum())
        if count > size:
            best, size = i, count
    return lab == best


def build(mirrors: Path, shared: Path, out: Path) -> list[dict[str, str]]:
    st = out / "stacked"
    _read(mirrors, _TS, "tests/reference_files/example_ct.nii.gz", st / "example_ct.nii.gz")
    _read(mirrors, _TS, "tests/reference_files/spine_report/example_ct_report/totalseg.nii.gz",
          st / "example_ct_spine.nii.gz")
    mr = nib.load(shared / "totalseg" / "example_seg_mr.nii.gz")
    disc = one_disc(np.asarray(mr.dataobj).astype(np.int32) == 20).astype(np.uint8)
    nib.save(nib.Nifti1Image(disc, mr.affine), st / "mr_disc.nii.gz")
    sh = Path("..") / shared.relative_to(out.parent) if shared.is_relative_to(out.parent) \
        else shared.resolve()
    rows = []
    for case in CASES:
        row = dict(zip(_FIELDS, case, strict=True))
        for key in ("image", "label"):
            row[key] = row[key].replace("SH/", f"{sh}/").replace("ST/", "stacked/")
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mirrors", default="/work/.mirror")
    ap.add_argument("--shared", default="/work/shared/data")
    ap.add_argument("--out", default="/work/devdata2")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    rows = build(Path(args.mirrors), Path(args.shared).resolve(), out)
    with (out / "stacked.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=_FIELDS)
        w.writeheader()
        w.writerows(rows)
    print(f"{len(rows)} cases -> {out / 'stacked.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
