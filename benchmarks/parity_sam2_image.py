"""segloop's SAM 2.1 2D path (transformers ``Sam2Model``) against facebookresearch/sam2's own
``SAM2ImagePredictor`` on a photo with points and/or a box: max |delta logit| and mask IoU.

sam2's code is fetched by whoever runs this and never committed. It runs in a child process
that does not import segloop (``--official-worker``), with the checkout and ``--extra-site``
(a folder with hydra-core, omegaconf, antlr4-python3-runtime, iopath, portalocker and a real
torchvision matching this torch, installed with ``pip install --no-deps --target SITE``) on its
path. On a CPU-only torch the PyPI torchvision wheel's C extension cannot load (a CUDA build);
its pure-Python transforms, which are all ``SAM2ImagePredictor`` uses, still work, and only
torchvision's fake-kernel registrations for its C operators (``_meta_registrations``) are
skipped. Both sides get the same random SAM 2.1 checkpoint, built by sam2's own hydra config,
every floating tensor perturbed (seeded) so no two same-shaped tensors are equal, imported into
segloop with its registry (``import_model``) as the variant named by ``--model``.

The official side: ``SAM2ImagePredictor(build_sam2(config, ckpt, device="cpu"))``,
``set_image(rgb uint8)``, ``predict(point_coords, point_labels, box, multimask_output,
return_logits=True)``; one point without a box asks for three masks and the one with the highest
predicted IoU is kept (as segloop does and sam2's demos do). segloop's side:
``Sam2ImagePredictor.load(model)``: ``encode`` then the same prompts. Prints, per prompt set,
max |delta logit| over the image-size logits, the IoU of the thresholded masks and both scores.

Usage::

    PYTHONPATH=src python benchmarks/parity_sam2_image.py --sam2 ~/src/sam2 --extra-site SITE \\
        --image ../shared/data/sam6d/rgb.png --work /tmp/p2 [--model sam2.1-tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

CONFIGS = {"sam2.1-tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
           "sam2.1-small": "configs/sam2.1/sam2.1_hiera_s.yaml",
           "sam2.1-base-plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
           "sam2.1-large": "configs/sam2.1/sam2.1_hiera_l.yaml"}
#: prompt sets on SAM-6D's rgb.png (640 x 480): around its reference object (x 377-433, y 228-314)
PROMPTS = [
    {"name": "one point", "points": [[405, 270]], "labels": [1]},
    {"name": "two points (+, -)", "points": [[405, 270], [300, 200]], "labels": [1, 0]},
    {"name": "box", "box": [372, 223, 438, 319]},
    {"name": "box + point", "box": [372, 223, 438, 319], "points": [[405, 270]], "labels": [1]},
]


def official(args: argparse.Namespace) -> None:
    """Runs with sam2's checkout and the extra site first on sys.path; never imports segloop."""
    sys.path[:0] = [str(Path(args.sam2).resolve()), str(Path(args.extra_site).resolve())]
    # torchvision's C extension (a CUDA build) cannot load beside a CPU torch; its fake-kernel
    # registrations for those operators would fail at import: skip them (transforms are Python)
    sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
    import torch
    import torchvision
    from hydra import compose
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from PIL import Image
    from sam2.build_sam import build_sam2  # type: ignore[import-not-found]
    from sam2.sam2_image_predictor import SAM2ImagePredictor  # type: ignore[import-not-found]

    torch.set_num_threads(args.threads)
    work = Path(args.work).resolve()
    ckpt = work / "sam21_random.pt"
    config = CONFIGS[args.model]
    if not ckpt.exists():  # sam2's own config, random init, every floating tensor perturbed
        cfg = compose(config_name=config)
        OmegaConf.resolve(cfg)
        torch.manual_seed(0)
        model = instantiate(cfg.model, _recursive_=True)
        g = torch.Generator().manual_seed(1234)
        sd = {}
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                v = v + 0.02 * torch.randn(v.shape, generator=g, dtype=v.dtype)
            sd[k] = v
        torch.save({"model": sd}, ckpt)
    pred = SAM2ImagePredictor(build_sam2(config, str(ckpt), device="cpu"))
    rgb = np.asarray(Image.open(args.image).convert("RGB"))
    pred.set_image(rgb)
    out: dict[str, np.ndarray] = {}
    for i, p in enumerate(PROMPTS):
        pts = np.asarray(p["points"], np.float32) if "points" in p else None
        lab = np.asarray(p["labels"], np.int32) if "labels" in p else None
        box = np.asarray(p["box"], np.float32) if "box" in p else None
        multi = box is None and pts is not None and len(pts) == 1
        logits, scores, _ = pred.predict(point_coords=pts, point_labels=lab, box=box,
                                         multimask_output=multi, return_logits=True)
        k = int(np.argmax(scores)) if multi else 0
        out[f"logits{i}"], out[f"score{i}"] = logits[k].astype(np.float32), np.float32(scores[k])
    np.savez(work / "official.npz", **out)
    print(f"official: torchvision {torchvision.__version__}, {config}, {len(PROMPTS)} prompt sets")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sam2", required=True, help="facebookresearch/sam2 checkout (not committed)")
    ap.add_argument("--extra-site", required=True, help="folder with torchvision, hydra-core, ...")
    ap.add_argument("--official-python", default=sys.executable)
    ap.add_argument("--image", default=str(Path(__file__).resolve().parents[1] / ".." / "shared"
                                           / "data" / "sam6d" / "rgb.png"))
    ap.add_argument("--model", default="sam2.1-tiny", choices=sorted(CONFIGS))
    ap.add_argument("--work", required=True, help="folder for the checkpoint and results")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--official-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.official_worker:
        official(args)
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    child = [args.official_python, __file__, "--official-worker", "--sam2", args.sam2,
             "--extra-site", args.extra_site, "--image", args.image, "--model", args.model,
             "--work", str(work.resolve()), "--threads", str(args.threads)]
    subprocess.run(child, check=True, env={k: v for k, v in os.environ.items()
                                           if k != "PYTHONPATH"})
    theirs = np.load(work / "official.npz")

    os.environ["SEGLOOP_HOME"] = str(work / "home")
    import torch
    from PIL import Image

    from segloop.engines.sam2.image2d import Sam2ImagePredictor
    from segloop.models.store import import_model
    from segloop.types import Prompts

    torch.set_num_threads(args.threads)
    import_model(work / "sam21_random.pt", args.model)
    pred = Sam2ImagePredictor.load(args.model)
    rgb = np.asarray(Image.open(args.image).convert("RGB"))
    emb = pred.encode(rgb)
    rows = []
    for i, p in enumerate(PROMPTS):
        prompts = Prompts.make(box=p.get("box"), points=p.get("points"), labels=p.get("labels"))
        logits, score = _segloop_logits(pred, emb, prompts)
        ref = theirs[f"logits{i}"]
        a, b = logits > 0, ref > 0
        iou = float((a & b).sum() / max((a | b).sum(), 1))
        rows.append({"prompts": p["name"], "max_abs_dlogit": float(np.abs(logits - ref).max()),
                     "logit_range": float(np.abs(ref).max()), "iou": iou,
                     "mask_px": int(b.sum()), "score_segloop": score,
                     "score_sam2": float(theirs[f"score{i}"])})
    for r in rows:
        print(json.dumps(r))


def _segloop_logits(pred: object, emb: object, prompts: object) -> tuple[np.ndarray, float]:
    """segloop's image-size logits (before its threshold at 0) and score, as ``predict``."""
    import torch
    import torch.nn.functional as F

    p: Any = pred
    e: Any = emb
    q: Any = prompts
    h, w, s = e.height, e.width, p.image_size
    scale = np.array([s / w, s / h])
    kw: dict[str, torch.Tensor] = {}
    if q.points.shape[0]:
        kw["input_points"] = torch.as_tensor(q.points * scale, dtype=torch.float32)[None, None]
        kw["input_labels"] = torch.as_tensor(q.labels, dtype=torch.int32)[None, None]
    if q.box is not None:
        kw["input_boxes"] = torch.as_tensor(np.asarray(q.box) * np.tile(scale, 2),
                                            dtype=torch.float32)[None, None]
    multi = q.box is None and q.points.shape[0] == 1
    with torch.inference_mode():
        out = p.model(image_embeddings=e.features, multimask_output=multi, **kw)
    scores = out.iou_scores[0, 0].float()
    k = int(torch.argmax(scores)) if multi else 0
    up = F.interpolate(out.pred_masks[0, 0, k][None, None].float(), size=(h, w), mode="bilinear",
                       align_corners=False)
    mask, score = p.predict(e, q)  # the engine's own call gives the same mask and score
    logits = up[0, 0].numpy()
    assert np.array_equal(mask, logits > 0) and abs(score - float(scores[k])) < 1e-6
    return logits, float(scores[k])


if __name__ == "__main__":
    main()
