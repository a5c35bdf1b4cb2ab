"""Seconds per ISM request on SAM-6D's example scene, split into proposals / descriptors / scoring.

    PYTHONPATH=src python benchmarks/bench_ism.py [--scene ../shared/data/sam6d] [--repeat 3]
        [--backends classic]

Templates are rendered once into a temporary folder (timed separately: ``render``); the first
request of each backend also computes the template descriptors (``templates``, once per object).
Per backend the script prints the median over ``--repeat`` warm requests of each stage, the
number of proposals, and the rank and mask IoU of the best match to ``ism_reference_mask.png``
(SAM-6D's published result). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from segloop.ism.mesh import read_ply
from segloop.ism.pipeline import IsmPipeline
from segloop.ism.render import render_templates
from segloop.ism.types import BackendName, Scene

SCENE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sam6d"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", type=Path, default=SCENE)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--backends", nargs="+", default=["classic"], choices=[b.value for b in BackendName])
    args = ap.parse_args()
    cam = json.loads((args.scene / "camera.json").read_text())
    depth = np.asarray(Image.open(args.scene / "depth.png")).astype(np.float32) * cam["depth_scale"]
    scene = Scene(rgb=np.asarray(Image.open(args.scene / "rgb.png").convert("RGB")), depth_mm=depth,
                  K=np.array(cam["cam_K"], dtype=float).reshape(3, 3))
    ref = np.asarray(Image.open(args.scene / "ism_reference_mask.png")) > 0
    cad = args.scene / "obj_000005.ply"
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        render_templates(read_ply(cad), Path(tmp), level=0)
        print(f"render: {time.perf_counter() - t0:.2f} s for 42 templates (512x512, numpy z-buffer)")
        pipe = IsmPipeline()
        for name in args.backends:
            backend = BackendName(name)
            first = pipe.run(scene, backend, Path(tmp), cad)
            runs = [pipe.run(scene, backend, Path(tmp), cad) for _ in range(args.repeat)]
            med = {k: statistics.median(getattr(r.timings, k) for r in runs)
                   for k in ("proposals", "descriptors", "scoring")}
            ious = [float((d.mask & ref).sum() / max((d.mask | ref).sum(), 1)) for d in first.detections]
            best = int(np.argmax(ious)) if ious else -1
            print(f"{name}: templates {first.timings.extra.get('templates', 0):.2f} s once; per request "
                  f"proposals {med['proposals']:.2f} s, descriptors {med['descriptors']:.2f} s, "
                  f"scoring {med['scoring']:.2f} s, total {sum(med.values()):.2f} s; "
                  f"{first.n_proposals} proposals, {len(first.detections)} detections")
            if best >= 0:
                print(f"{name}: reference can = detection rank {best + 1} (score "
                      f"{first.detections[best].score:.3f}), mask IoU {ious[best]:.3f}")


if __name__ == "__main__":
    main()
