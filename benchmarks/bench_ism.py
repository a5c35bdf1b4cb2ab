"""Seconds per ISM request on SAM-6D's example scene, split into proposals / descriptors / scoring.

    PYTHONPATH=src python benchmarks/bench_ism.py [--scene ../shared/data/sam6d] [--repeat 3]
        [--backends classic] [--templates DIR] [--save-detections FILE.npz]

``--backends sam`` builds SAM and DINOv2 ViT-L/14 with *random* weights of the real sizes from the
registry's configs (``--sam sam-vit-h|sam-vit-b``; no download): timings are meaningful, detections
are not. ``--points-per-side`` shrinks SAM's 32×32 grid on slow CPUs (cost is linear in points).

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
from segloop.ism.sam_backend import AmgConfig, SamBackend
from segloop.ism.types import BackendName, Scene
from segloop.models.registry import get_spec

SCENE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sam6d"


def _random_sam(sam_name: str, points_per_side: int) -> SamBackend:
    import torch
    from transformers import Dinov2Config, Dinov2Model, SamConfig, SamModel

    torch.manual_seed(0)
    sam = SamModel(SamConfig(**get_spec(sam_name).config))
    dino = Dinov2Model(Dinov2Config(**get_spec("dinov2-vitl14").config))
    if torch.cuda.is_available():
        sam, dino = sam.to("cuda"), dino.to("cuda")
    print(f"sam: random {sam_name} ({sum(p.numel() for p in sam.parameters()) / 1e6:.0f} M params) + "
          f"dinov2-vitl14 ({sum(p.numel() for p in dino.parameters()) / 1e6:.0f} M), "
          f"{points_per_side}x{points_per_side} points, device {next(sam.parameters()).device}")
    # random weights predict low IoUs: keep every mask so descriptors and scoring are timed on
    # a realistic number of proposals (detections stay meaningless)
    return SamBackend(sam, dino, AmgConfig(points_per_side=points_per_side, pred_iou_thresh=-1e9))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", type=Path, default=SCENE)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--backends", nargs="+", default=["classic"], choices=[b.value for b in BackendName])
    ap.add_argument("--sam", default="sam-vit-h", choices=["sam-vit-h", "sam-vit-b"])
    ap.add_argument("--points-per-side", type=int, default=32)
    ap.add_argument("--templates", type=Path, help="reuse this template folder (rendered when empty)")
    ap.add_argument("--save-detections", type=Path, help="write the first request's detections (npz)")
    args = ap.parse_args()
    cam = json.loads((args.scene / "camera.json").read_text())
    depth = np.asarray(Image.open(args.scene / "depth.png")).astype(np.float32) * cam["depth_scale"]
    scene = Scene(rgb=np.asarray(Image.open(args.scene / "rgb.png").convert("RGB")), depth_mm=depth,
                  K=np.array(cam["cam_K"], dtype=float).reshape(3, 3))
    ref = np.asarray(Image.open(args.scene / "ism_reference_mask.png")) > 0
    cad = args.scene / "obj_000005.ply"
    with tempfile.TemporaryDirectory() as scratch:
        tmp = str(args.templates or scratch)
        if not (Path(tmp) / "xyz_41.npy").is_file():
            Path(tmp).mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            render_templates(read_ply(cad), Path(tmp), level=0)
            print(f"render: {time.perf_counter() - t0:.2f} s for 42 templates (512x512, numpy z-buffer)")
        pipe = IsmPipeline()
        if "sam" in args.backends:
            pipe.add_backend(BackendName.SAM, _random_sam(args.sam, args.points_per_side))
        for name in args.backends:
            backend = BackendName(name)
            thresh = 0.97 if backend is not BackendName.SAM else 0.0  # random weights: keep all
            first = pipe.run(scene, backend, Path(tmp), cad, thresh)
            runs = [pipe.run(scene, backend, Path(tmp), cad, thresh) for _ in range(args.repeat)]
            med = {k: statistics.median(getattr(r.timings, k) for r in runs)
                   for k in ("proposals", "descriptors", "scoring")}
            if args.save_detections is not None:
                np.savez_compressed(args.save_detections, scores=[d.score for d in first.detections],
                                    masks=np.array([d.mask for d in first.detections]))
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
