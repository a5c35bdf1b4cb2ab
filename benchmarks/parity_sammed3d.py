"""Parity of segloop's ``sammed3d`` pipeline with the official SAM-Med3D inference.

Runs the official model (``medim.create_model("SAM-Med3D")``, what the official
``medim_val_single.py`` uses) and the official procedure of ``utils/infer_utils.py``
(``data_preprocess`` -> ``sam_model_infer`` -> ``data_postprocess``, i.e. one category of
``validate_paired_img_gt``, seed 233, clicks sampled from the error region) against segloop's
code on the SAME random weights: every tensor of the real ViT-B architecture perturbed so no two
same-shaped tensors are equal, saved in the official layout and loaded through segloop's strict
name mapping. segloop's side uses its own resampling/cropping/normalisation
(:class:`PatchGrid`, :func:`znormalise`), its own model and its own paste-back; the clicks are
the ones the official loop drew (recorded), given in patch voxels, and the patch is centred as
the official one (on the label's bounding box in the resampled grid).

Needs, in the Python that runs it, the official code's packages (medim, torchio 0.20.x,
SimpleITK, edt) besides segloop; never install them into segloop's environment. Example::

    git clone https://github.com/uni-medical/SAM-Med3D /work/scratch-sammed3d/SAM-Med3D
    python3 -m venv /work/scratch-sammed3d/venv  # + medim torchio==0.20.21 SimpleITK edt ...
    PYTHONPATH=src /work/scratch-sammed3d/venv/bin/python benchmarks/parity_sammed3d.py \
        /work/scratch-sammed3d/SAM-Med3D --clicks 3

Prints, per case and click: max |Δlogit| on the 128³ patch (before the sigmoid), and the Dice
between the two final masks on the patch and on the original image grid.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
CASES = {  # case: (image, label file, label value) from ../shared/data/cases.csv
    "ct_kidney_r": ("totalseg/example_ct_sm.nii.gz", "totalseg/example_seg.nii.gz", 2),
    "mr_kidney_r": ("totalseg/example_mr_sm.nii.gz", "totalseg/example_seg_mr.nii.gz", 2),
}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def perturbed_official_model(seed: int) -> Any:
    import medim

    torch.manual_seed(seed)
    model = medim.create_model("SAM-Med3D", pretrained=False).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for i, t in enumerate(model.state_dict().values()):
            if t.is_floating_point():
                t.add_(0.02 * (1.0 + i / 97.0) * torch.randn(t.shape, generator=gen))
    by_shape: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for t in model.state_dict().values():
        by_shape.setdefault(tuple(t.shape), []).append(t)
    for ts in by_shape.values():
        for i in range(len(ts)):
            for j in range(i + 1, len(ts)):
                assert not torch.equal(ts[i], ts[j]), "two same-shaped tensors are equal"
    return model


def official_run(model: Any, img: Path, gt: Path, label: int, clicks: int) -> dict[str, Any]:
    from utils import infer_utils as iu

    torch.manual_seed(233)
    np.random.seed(233)
    drawn: list[tuple[list[int], int]] = []

    def recording(prev: torch.Tensor, gt3: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p, lab = iu.random_sample_next_click(prev, gt3)
        drawn.append((p.reshape(3).tolist(), int(lab.reshape(()))))
        return p, lab

    subject, meta = iu.get_subject_and_meta_info(str(img), str(gt))
    sub, meta = copy.deepcopy(subject), copy.deepcopy(meta)
    roi_image, roi_label, meta = iu.data_preprocess(sub, meta, category_index=label,
                                                    target_spacing=(1.5, 1.5, 1.5), crop_size=128)
    t0 = time.perf_counter()
    pred, low = iu.sam_model_infer(model, roi_image, roi_gt=roi_label, prompt_generator=recording,
                                   num_clicks=clicks)
    secs = time.perf_counter() - t0
    with torch.no_grad():
        logits = torch.nn.functional.interpolate(low, size=(128, 128, 128), mode="trilinear",
                                                 align_corners=False)[0, 0].numpy()
    full = iu.data_postprocess(pred, meta)  # (Z, Y, X) of the original file
    return {"roi_image": roi_image[0, 0].numpy(), "roi_label": roi_label[0, 0].numpy() > 0,
            "clicks": drawn, "logits": logits, "mask": pred.astype(bool),
            "full": full.astype(bool), "roi_affine": meta["roi_subject_affine"], "secs": secs}


def segloop_run(ckpt: Path, img: Path, gt: Path, label: int, clicks: list[tuple[list[int], int]]
                ) -> dict[str, Any]:
    from segloop.engines.sammed3d.convert import load_model_file
    from segloop.engines.sammed3d.model import SamMed3DConfig
    from segloop.engines.sammed3d.preprocess import PatchGrid, znormalise
    from segloop.io import load_volume

    model = load_model_file(ckpt, SamMed3DConfig())
    vol = load_volume(img)
    canon = vol.canonical()
    lab = load_volume(gt)
    lab_c = np.asarray(lab.canonical().data) == label
    shape = canon.shape
    grid0 = PatchGrid(shape, canon.spacing, 1.5, 128, (0, 0, 0))
    # the label's bounding box on the resampled grid (nearest neighbour, as torchio's label resampling)
    idx = [np.clip(np.floor(grid0.to_canonical_axis(a, np.arange(grid0.resampled_shape[a])) + 0.5),
                   0, shape[a] - 1).astype(int) for a in range(3)]
    lab_r = lab_c[np.ix_(*idx)]
    nz = np.argwhere(lab_r)
    grid = PatchGrid.around_resampled(shape, canon.spacing, nz.min(0), nz.max(0) + 1)
    patch = znormalise(grid.sample(np.asarray(canon.data)))
    x = torch.from_numpy(patch)[None, None]
    t0 = time.perf_counter()
    with torch.no_grad():
        emb = model.encode(x)
        low = torch.zeros(1, 1, 32, 32, 32)
        pts = torch.zeros(1, 0, 3)
        labs = torch.zeros(1, 0, dtype=torch.int64)
        per_click = []
        for p, lb in clicks:
            pts = torch.cat([pts, torch.tensor([[p]], dtype=torch.float32)], 1)
            labs = torch.cat([labs, torch.tensor([[lb]])], 1)
            low, _ = model.decode(emb, pts, labs, low)
            per_click.append(model.upscale(low)[0, 0].numpy())
    secs = time.perf_counter() - t0
    mask = per_click[-1] > 0
    full_c = np.zeros(shape, dtype=bool)
    grid.paste(mask, full_c)
    full = vol.canonical_to_source(full_c).transpose(2, 1, 0)
    origin = canon.affine @ np.r_[grid.to_canonical(np.asarray(grid.start, float)), 1.0]
    return {"patch": patch, "per_click": per_click, "mask": mask, "full": full,
            "origin": origin[:3], "secs": secs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("official", type=Path,
                    help="a checkout of uni-medical/SAM-Med3D (has utils/infer_utils.py)")
    ap.add_argument("--clicks", type=int, default=3, help="clicks per case (official loop)")
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not (args.official / "utils" / "infer_utils.py").is_file():
        print(f"error: {args.official} has no utils/infer_utils.py", file=sys.stderr)
        return 2
    sys.path.insert(0, str(args.official.resolve()))
    torch.set_num_threads(args.threads)
    model = perturbed_official_model(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "random_vit_b.pth"
        torch.save({"model_state_dict": model.state_dict()}, ckpt)
        for case in args.cases:
            img, gt, label = (DATA / CASES[case][0], DATA / CASES[case][1], CASES[case][2])
            off = official_run(model, img, gt, label, args.clicks)
            ours = segloop_run(ckpt, img, gt, label, off["clicks"])
            print(f"== {case}: clicks {off['clicks']}")
            print(f"   patch origin (RAS mm) official {np.round(off['roi_affine'][:3, 3], 3).tolist()}"
                  f" segloop {np.round(ours['origin'], 3).tolist()}")
            print(f"   input patch max |Δ| {np.abs(off['roi_image'] - ours['patch']).max():.2e}")
            last = ours["per_click"][-1]  # the official loop returns the last click's logits
            dl = np.abs(last - off["logits"]).max()
            print(f"   after click {len(ours['per_click'])}: max |Δlogit| {dl:.2e}"
                  f" (|logit| up to {np.abs(off['logits']).max():.1f})")
            print(f"   Dice patch {dice(off['mask'], ours['mask']):.5f}  Dice original grid"
                  f" {dice(off['full'], ours['full']):.5f}  (voxels {int(off['full'].sum())} vs"
                  f" {int(ours['full'].sum())})")
            print(f"   seconds (encode + {args.clicks} clicks): official {off['secs']:.1f}"
                  f" segloop {ours['secs']:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
