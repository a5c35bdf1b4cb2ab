"""Parity of segloop's ``medsam`` engine with MedSAM's own inference code (bowang-lab/MedSAM).

Both run the same random-weight SAM ViT-B (every tensor perturbed, so no two tensors of the
same shape are equal and a swapped name cannot go unnoticed), written once in MedSAM's own
checkpoint layout (``medsam_vit_b.pth``): segloop imports it through ``segloop models
import``-equivalent code and its own name mapping; MedSAM's ``MedSAM_Inference.py`` is run
UNCHANGED as a script (``runpy``) in a separate process with ``-i IMG --box [..] -chk CKPT``,
and its module globals give the embedding, the box and the mask it computed. Reported per
image: max |Δ| of the image embeddings, max |Δ| of the 256² low-resolution logits (MedSAM's
``mask_decoder`` on its own embedding vs segloop's SamModel), and the IoU of the final masks.

The official code is not part of segloop: fetch it yourself (``git clone
https://github.com/bowang-lab/MedSAM``) and pass its folder. Its ``segment_anything`` imports
torchvision in modules the inference path never calls (the predictor's resize helper and
the automatic mask generator's NMS); when torchvision is not importable, the official side
gets an empty stand-in module for those imports (``--python`` may name a throwaway venv that
has a real torchvision; never install it into segloop's venv).

    python benchmarks/medsam_parity.py --medsam-code /work/scratch-medsam/MedSAM \\
        --ct ../shared/data/totalseg/example_ct_sm.nii.gz --ct-slice 24 --ct-box 20 30 80 100 \\
        --photo ../shared/data/sam6d/rgb.png --photo-box 200 120 420 360
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

OFFICIAL_DRIVER = textwrap.dedent('''
    import json, runpy, sys, types, importlib.util
    import numpy as np, torch
    code, img, box, ckpt, out = sys.argv[1:6]
    if importlib.util.find_spec("torchvision") is None:  # unused by the inference path
        tv = types.ModuleType("torchvision"); tf = types.ModuleType("torchvision.transforms")
        tff = types.ModuleType("torchvision.transforms.functional")
        ops = types.ModuleType("torchvision.ops"); opb = types.ModuleType("torchvision.ops.boxes")
        def _unused(*a, **k): raise RuntimeError("torchvision stand-in: not used by inference")
        tff.resize = tff.to_pil_image = opb.batched_nms = opb.box_area = _unused
        for name, mod in (("torchvision", tv), ("torchvision.transforms", tf),
                          ("torchvision.transforms.functional", tff), ("torchvision.ops", ops),
                          ("torchvision.ops.boxes", opb)):
            sys.modules[name] = mod
    sys.path.insert(0, code)
    sys.argv = ["MedSAM_Inference.py", "-i", img, "-o", out + "/", "--box", box, "-chk", ckpt,
                "--device", "cpu"]
    g = runpy.run_path(code + "/MedSAM_Inference.py", run_name="__main__")
    m, emb = g["medsam_model"], g["image_embedding"]
    with torch.no_grad():
        bt = torch.as_tensor(g["box_1024"], dtype=torch.float)[:, None, :]
        sp, de = m.prompt_encoder(points=None, boxes=bt, masks=None)
        low, _ = m.mask_decoder(image_embeddings=emb, image_pe=m.prompt_encoder.get_dense_pe(),
                                sparse_prompt_embeddings=sp, dense_prompt_embeddings=de,
                                multimask_output=False)
    np.savez(out + "/official.npz", embedding=emb.numpy(), logits=low.numpy(),
             mask=g["medsam_seg"], box_1024=np.asarray(g["box_1024"]))
''')


def perturbed_vit_b(seed: int) -> object:
    """A random SAM ViT-B SamModel with every tensor perturbed (distinct same-shape tensors)."""
    import torch

    from segloop.models.sam_v1 import build_sam_model, sam_vit_b_config

    torch.manual_seed(seed)
    model = build_sam_model(sam_vit_b_config())
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
        # the two tied copies of the Gaussian matrix must stay equal (one tensor in MedSAM)
        model.shared_image_embedding.positional_embedding.copy_(
            model.prompt_encoder.shared_embedding.positional_embedding)
    seen: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for name, t in model.state_dict().items():
        if name == "shared_image_embedding.positional_embedding":
            continue
        for other in seen.setdefault(tuple(t.shape), []):
            assert not torch.equal(other, t), f"{name} equals another tensor of its shape"
        seen[tuple(t.shape)].append(t)
    return model


def ct_slice_png(path: Path, z: int, out: Path) -> Path:
    """Axial slice z of a CT volume, soft-tissue window, as MedSAM's users feed it (uint8 PNG)."""
    from PIL import Image

    from segloop.engines.sam2.preprocess import to_uint8_volume
    from segloop.io import load_volume

    vol = load_volume(path).canonical()
    u8 = to_uint8_volume(vol.data, vol.modality)[z]  # (H=y, W=x): segloop's model view
    Image.fromarray(u8).save(out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--medsam-code", type=Path, required=True, help="checkout of bowang-lab/MedSAM")
    ap.add_argument("--python", default=sys.executable, help="interpreter for the official side")
    ap.add_argument("--ct", type=Path, required=True)
    ap.add_argument("--ct-slice", type=int, required=True)
    ap.add_argument("--ct-box", type=int, nargs=4, required=True, metavar=("X0", "Y0", "X1", "Y1"))
    ap.add_argument("--photo", type=Path, required=True)
    ap.add_argument("--photo-box", type=int, nargs=4, required=True, metavar=("X0", "Y0", "X1", "Y1"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="medsam-parity-") as tmp_s:
        tmp = Path(tmp_s)
        os.environ["SEGLOOP_HOME"] = str(tmp / "home")
        from segloop.engines.medsam import MedSAMEngine
        from segloop.engines.medsam.testing import save_medsam_checkpoint
        from segloop.io.image2d import load_image2d
        from segloop.models.store import import_model
        from segloop.types import Prompts

        ckpt = save_medsam_checkpoint(perturbed_vit_b(args.seed), tmp / "medsam_vit_b.pth")  # type: ignore[arg-type]
        import_model(ckpt, "medsam")
        pred = MedSAMEngine(model="medsam", device="cpu").predictor()
        cases = [("CT slice", ct_slice_png(args.ct, args.ct_slice, tmp / "ct.png"), args.ct_box),
                 ("RGB photo", args.photo, args.photo_box)]
        rows = []
        for label, img_path, box in cases:
            out = tmp / label.replace(" ", "_")
            out.mkdir()
            box_text = "[" + ",".join(str(v) for v in box) + "]"
            env = {**os.environ, "MPLBACKEND": "Agg"}
            res = subprocess.run([args.python, "-c", OFFICIAL_DRIVER, str(args.medsam_code.resolve()),
                                  str(Path(img_path).resolve()), box_text, str(ckpt), str(out)],
                                 capture_output=True, text=True, env=env, cwd=tmp)
            if res.returncode != 0:
                print(res.stderr[-3000:], file=sys.stderr)
                return 1
            off = np.load(out / "official.npz")
            image = load_image2d(img_path)
            emb = pred.encode(image.pixels)
            prompts = Prompts(box=(box[0], box[1], box[2], box[3]))
            ours_logits = pred.logits(emb, prompts).cpu().numpy()
            ours_mask = pred.predict(emb, prompts)
            theirs = off["mask"].astype(bool)
            union = int((ours_mask | theirs).sum())
            iou = int((ours_mask & theirs).sum()) / union if union else 1.0
            rows.append({
                "image": label, "size": f"{image.width}x{image.height}", "rgb": image.is_rgb,
                "box": box,
                "max_abs_d_embedding": float(np.abs(emb.features.numpy() - off["embedding"]).max()),
                "max_abs_d_logit": float(np.abs(ours_logits - off["logits"]).max()),
                "logit_range": [float(off["logits"].min()), float(off["logits"].max())],
                "mask_pixels": [int(ours_mask.sum()), int(theirs.sum())], "iou": iou,
            })
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        print(json.dumps({"torch": torch.__version__, "threads": args.threads, "cases": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
