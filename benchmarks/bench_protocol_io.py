"""The protocol layer's own file work around a MONAI Label ``/infer``: the result file, fsync or not.

A MONAI Label answer carries the mask as a file on the upload's grid (``result_extension``
.nii.gz / .nrrd / .nii, compressed unless ``result_compress=false``); segloop writes it under
its tmp folder, sends it and deletes it. Until issue 14's follow-up the write went through the
durable atomic writer (fsync of the file and of its folder), which only costs time for a file
that lives for one request. This times both, alternating, in one run: ``durable`` (the old
path: fsync) and ``throwaway`` (what ``write_result`` does now), plus the old uncompressed-NRRD
path (written compressed, read back, written again). Medians of wall and CPU time, ms.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_protocol_io.py [--n 15]
        [--image ../shared/data/totalseg/example_ct_sm.nii.gz]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _time(fn: Callable[[], object]) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=15, help="repeats per case (alternating)")
    ap.add_argument("--image", type=Path,
                    default=ROOT / ".." / "shared" / "data" / "totalseg" / "example_ct_sm.nii.gz")
    a = ap.parse_args()
    import SimpleITK as sitk

    from segloop.io import load_volume, save_mask
    from segloop.protocols.ml_geometry import write_result

    vol = load_volume(a.image)
    shape = vol.canonical().shape
    mask = np.zeros(shape, bool)
    mask[shape[0] // 4: shape[0] // 2, shape[1] // 4: shape[1] // 2, shape[2] // 3: shape[2] // 2] = True
    m8 = mask.astype(np.uint8)
    d = Path(tempfile.mkdtemp())

    def old_nrrd_raw() -> None:  # the old result_compress=false path
        p = d / "old.nrrd"
        save_mask(m8, vol, p)
        sitk.WriteImage(sitk.ReadImage(str(p)), str(p), False)

    cases: dict[str, Callable[[], object]] = {
        ".nii.gz durable (old)": lambda: save_mask(m8, vol, d / "a.nii.gz"),
        ".nii.gz throwaway (now)": lambda: write_result(mask, vol, d, "b", ".nii.gz"),
        ".nrrd durable (old)": lambda: save_mask(m8, vol, d / "a.nrrd"),
        ".nrrd throwaway (now)": lambda: write_result(mask, vol, d, "b", ".nrrd"),
        ".nrrd raw: old (write, read, write)": old_nrrd_raw,
        ".nrrd raw: now (one write)": lambda: write_result(mask, vol, d, "c", ".nrrd",
                                                           compress=False),
    }
    res: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
    for _ in range(a.n):
        for k, fn in cases.items():
            res[k].append(_time(fn))
    print(f"image {a.image.name} {tuple(vol.shape)}; n={a.n}; medians, ms")
    print(f"{'case':40s} {'wall':>8s} {'cpu':>8s}")
    for k, v in res.items():
        print(f"{k:40s} {statistics.median(x[0] for x in v):8.2f} "
              f"{statistics.median(x[1] for x in v):8.2f}")


if __name__ == "__main__":
    main()
