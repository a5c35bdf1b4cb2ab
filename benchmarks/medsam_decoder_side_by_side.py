"""A repeated box on an encoded image: MedSAM's own decode (``medsam_inference`` of
bowang-lab/MedSAM's ``MedSAM_Inference.py``) against segloop's ``medsam`` engine, same weights.

MedSAM's code is fetched by whoever runs this and never committed. Its ``segment_anything``
builds SAM ViT-B with random weights, every floating tensor perturbed; both get the same
weights (built by segloop, saved in MedSAM's layout with ``sam_hf_to_original``, loaded by
MedSAM's ``sam_model_registry``). ``medsam_inference`` is taken
from ``MedSAM_Inference.py`` unchanged (only that function is executed: the script's top level
parses arguments and reads a demo image) and timed alternated, call by call, with
``MedSAMPredictor.predict`` (segloop's cached decoder + the same sigmoid, bilinear upsampling
and 0.5 threshold) on the same embedding and box. ``segment_anything`` imports torchvision for
its resize helpers: give ``--extra-site`` a folder holding a real torchvision (``pip install
--no-deps --target SITE torchvision==<version for this torch>``); on a CPU torch its CUDA C
extension cannot load, so its fake-kernel registrations for those operators are skipped.

    PYTHONPATH=src python benchmarks/medsam_decoder_side_by_side.py --medsam-code MedSAM \\
        --extra-site SITE [--threads 1] [--repeats 20] [--size 512 512]
"""

from __future__ import annotations

import argparse
import ast
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np


def _medsam_inference(code: Path) -> Any:
    """MedSAM's ``medsam_inference`` function, executed from its own source file."""
    import torch
    import torch.nn.functional as F

    tree = ast.parse((code / "MedSAM_Inference.py").read_text(encoding="utf-8"))
    fn = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "medsam_inference"]
    ns: dict[str, Any] = {"torch": torch, "F": F, "np": np}
    exec(compile(ast.Module(body=fn, type_ignores=[]), "MedSAM_Inference.py", "exec"), ns)
    return ns["medsam_inference"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--medsam-code", required=True, type=Path, help="bowang-lab/MedSAM checkout")
    ap.add_argument("--extra-site", required=True, help="folder with a real torchvision")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--size", type=int, nargs=2, default=[512, 512], metavar=("H", "W"))
    args = ap.parse_args()
    sys.path[:0] = [str(args.medsam_code.resolve()), args.extra_site]
    sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
    import torch
    from segment_anything import sam_model_registry  # type: ignore[import-not-found]

    from segloop.engines.medsam.fast_decode import prepare
    from segloop.engines.medsam.predictor import Embedding, MedSAMPredictor
    from segloop.models.sam_v1 import build_sam_model, sam_hf_to_original, sam_vit_b_config
    from segloop.types import Prompts

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours = build_sam_model(sam_vit_b_config(1024)).eval()
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():  # every floating tensor perturbed (random init leaves biases at zero)
        for p in ours.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    with tempfile.TemporaryDirectory() as tmp:  # MedSAM's builder loads weights from a file
        ckpt = Path(tmp) / "medsam_random.pth"
        torch.save(sam_hf_to_original(ours.state_dict()), ckpt)
        theirs = sam_model_registry["vit_b"](checkpoint=str(ckpt)).eval()
    pred = MedSAMPredictor(model=ours, device=torch.device("cpu"), image_size=1024)
    medsam_inference = _medsam_inference(args.medsam_code)
    h, w = args.size
    feats = torch.randn(1, 256, 64, 64, generator=g)
    with torch.inference_mode():
        emb = Embedding(features=feats, height=h, width=w, cache=prepare(ours, feats))
    box = (w // 4, h // 4, 3 * w // 4, 3 * h // 4)
    box_1024 = np.array([box]) / np.array([w, h, w, h]) * 1024  # as MedSAM_Inference.py scales it
    prompts = Prompts(box=box)
    a = medsam_inference(theirs, feats, box_1024, h, w)
    b = pred.predict(emb, prompts)
    low_theirs = theirs.mask_decoder(
        image_embeddings=feats, image_pe=theirs.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=theirs.prompt_encoder(
            points=None, boxes=torch.as_tensor(box_1024, dtype=torch.float)[:, None], masks=None)[0],
        dense_prompt_embeddings=theirs.prompt_encoder(
            points=None, boxes=torch.as_tensor(box_1024, dtype=torch.float)[:, None], masks=None)[1],
        multimask_output=False)[0].detach()
    diff = float((pred.logits(emb, prompts) - low_theirs).abs().max())
    iou = float((a.astype(bool) & b).sum() / max((a.astype(bool) | b).sum(), 1))
    runs: dict[str, list[tuple[float, float]]] = {"MedSAM medsam_inference": [],
                                                  "segloop MedSAMPredictor.predict": []}
    fns = {"MedSAM medsam_inference": lambda: medsam_inference(theirs, feats, box_1024, h, w),
           "segloop MedSAMPredictor.predict": lambda: pred.predict(emb, prompts)}
    for fn in fns.values():
        fn()
    for _ in range(args.repeats):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            runs[name].append((time.perf_counter() - t0, time.process_time() - c0))
    print(f"repeated box on a {w}x{h} image, {args.threads} thread(s), median of {args.repeats}"
          " (alternated):")
    for name, r in runs.items():
        print(f"  {name}: {1000 * statistics.median(x for x, _ in r):.1f} ms wall,"
              f" {1000 * statistics.median(c for _, c in r):.1f} ms CPU")
    print(f"  max |delta low-res logit| {diff:.1e}, mask IoU {iou:.4f}, mask px {int(b.sum())}")


if __name__ == "__main__":
    main()
