"""MONAI Label's client on real volumes re-stored in other orientations: same mask, same Dice?

For each NIfTI case of ``cases.csv`` the image and its label are re-stored twice (two flips;
one flip plus an in-plane axis swap), uploaded as a session through ``MONAILabelClient``, and
segmented from a ROI alone (the label's bounding box, in the stored file's IJK indices, in
3D Slicer's flat form). Prints the orientation codes, Dice against the label on the file's
own grid and the client's wait; the mask must come back with the file's shape and affine.

    PYTHONPATH=src .venv/bin/python benchmarks/protocol_orientations.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "protocols"))

STORAGES = [((0, 1), (0, 1, 2)), ((0,), (1, 0, 2))]  # (flipped axes, axis order)


def main() -> None:
    from monailabel.client import MONAILabelClient

    from conftest import start_server  # the tests' live-server helper

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data")
    a = ap.parse_args()
    rows = list(csv.DictReader((a.data / "cases.csv").open()))
    tmp = Path(tempfile.mkdtemp())
    srv = start_server(tmp / "home")
    c = MONAILabelClient(f"{srv.url}/monailabel", tmpdir=str(tmp))
    try:
        for r in rows:
            if not r["image"].endswith((".nii.gz", ".nii")):
                continue
            img: Any = nib.load(str(a.data / r["image"]))
            lab_img: Any = nib.load(str(a.data / r["label"]))
            lab = np.asarray(lab_img.dataobj) == int(r["label_value"])
            data = np.asarray(img.dataobj)
            for flips, perm in STORAGES:
                t = np.array([[perm.index(i), -1 if i in flips else 1] for i in range(3)], float)
                d2 = ornt.apply_orientation(data, t)
                l2 = ornt.apply_orientation(lab, t)
                aff2 = img.affine @ ornt.inv_ornt_aff(t, data.shape)
                f = tmp / f"{r['case_id']}.nii.gz"
                nib.save(nib.Nifti1Image(d2, aff2), str(f))
                nz = np.argwhere(l2)
                lo, hi = nz.min(0), nz.max(0)
                roi = [int(lo[0]), int(hi[0]), int(lo[1]), int(hi[1]), int(lo[2]), int(hi[2])]
                sid = c.create_session(str(f))["session_id"]
                t0 = time.perf_counter()
                out, _ = c.infer("classic", sid, {"roi": roi}, session_id=sid)
                wait = time.perf_counter() - t0
                m: Any = nib.load(out)
                mk = np.asarray(m.dataobj) > 0
                assert mk.shape == l2.shape and np.allclose(m.affine, aff2, atol=1e-4)
                dice = 2 * (mk & l2).sum() / (mk.sum() + l2.sum())
                codes = "".join(nib.aff2axcodes(aff2))
                print(f"{r['case_id']:22s} {codes}  dice {dice:.3f}  {wait:5.2f} s")
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
