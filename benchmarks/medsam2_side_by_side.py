"""segloop's ``medsam2`` engine side by side with MedSAM2's own predictor: masks and speed.

MedSAM2's code (bowang-lab/MedSAM2) is fetched by whoever runs this and never committed. It
runs in its own Python (``--official-python``; it needs ``hydra-core``, and the ``torch`` that
python sees), in a child process that does not import segloop, following
``medsam2_infer_3D_CT.py``: the file read *as stored* (SimpleITK's array order, here through
nibabel, which gives the same array for NIfTI), window, min-max to uint8, RGB, resize to 512,
ImageNet normalisation, box on the key slice, forward propagation, reset, the same backwards,
union, largest connected component. Both sides get the same random hiera-tiny 512 checkpoint
(built by MedSAM2's own builder, perturbed so no two same-shaped tensors are equal, imported
into segloop with its registry) and hole filling off (MedSAM2's is a CUDA extension).

Usage::

    python benchmarks/medsam2_side_by_side.py --medsam2 ~/src/MedSAM2 --official-python PY \\
        --image ct.nii.gz --box 44 27 104 81 --slice 24 --to-lps
    python benchmarks/medsam2_side_by_side.py --medsam2 ... --synthetic 512 512 200 --device cuda

The box and slice are segloop's (canonical RAS voxels, as ``segloop segment`` takes them); the
official side gets the same box in the file's stored voxel order, as MedSAM2's scripts take
it. ``--to-lps`` first writes an LPS-stored copy of the image (the usual DICOM-derived storage,
where MedSAM2's view and segloop's radiological view are the same). ``--synthetic X Y Z``
writes an LPS-stored CT-like NIfTI with a bright ellipsoid. Prints per-slice IoU (min/mean),
Dice, differing voxels, key-slice max |delta logit|, slices per second of both and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__: list[str] = []

WINDOW = (-160.0, 240.0)  # soft tissue (40, 400), what segloop's CT default is


# ------------------------------------------------------------------ the official side (child)


def _official_worker(args: argparse.Namespace) -> None:
    """Runs in MedSAM2's python with its checkout first on sys.path; never imports segloop."""
    code = Path(args.medsam2).resolve()
    sys.path.insert(0, str(code))
    os.chdir(code)
    import nibabel as nib
    import torch
    from PIL import Image
    from sam2.build_sam import build_sam2_video_predictor_npz  # type: ignore[import-not-found]
    from scipy import ndimage

    torch.manual_seed(0)
    device = torch.device(args.device)
    ckpt = Path(args.work).resolve() / "medsam2_random.pt"
    if not ckpt.exists():  # MedSAM2's own builder, random init, perturbed
        from hydra import compose
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        cfg = compose(config_name="configs/sam2.1_hiera_t512.yaml")
        OmegaConf.resolve(cfg)
        model = instantiate(cfg.model, _recursive_=True)
        g = torch.Generator().manual_seed(1234)
        sd = {}
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                v = v + 0.02 * torch.randn(v.shape, generator=g, dtype=v.dtype)
            sd[k] = v
        torch.save({"model": sd}, ckpt)
    overrides = [
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
        "++model.binarize_mask_from_pts_for_mem_enc=true",
        "++model.fill_hole_area=0",
    ]
    predictor = build_sam2_video_predictor_npz("configs/sam2.1_hiera_t512.yaml", str(ckpt),
                                               device=device, apply_postprocessing=False,
                                               hydra_overrides_extra=overrides)
    stored = np.asarray(nib.load(args.image).dataobj)  # (i, j, k) as stored
    data = stored.transpose(2, 1, 0)  # SimpleITK's GetArrayFromImage order (z, y, x)
    pre = np.clip(data, *WINDOW)
    pre = np.uint8((pre - pre.min()) / (pre.max() - pre.min()) * 255.0)
    d, h, w = pre.shape
    frames = np.zeros((d, 3, 512, 512))
    for i in range(d):
        img = Image.fromarray(pre[i].astype(np.uint8)).convert("RGB").resize((512, 512))
        frames[i] = np.array(img).transpose(2, 0, 1)
    video = torch.from_numpy(frames / 255.0).to(device)
    mean = torch.tensor((0.485, 0.456, 0.406), dtype=torch.float32)[:, None, None].to(device)
    std = torch.tensor((0.229, 0.224, 0.225), dtype=torch.float32)[:, None, None].to(device)
    video -= mean
    video /= std
    box = np.array(args.box)
    segs = np.zeros((d, h, w), np.uint8)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if args.precision == "bf16"
                else torch.autocast("cpu", enabled=False))
    key_logits = None
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.inference_mode(), autocast:
        state = predictor.init_state(video, h, w)
        for reverse in (False, True):
            _, _, logits = predictor.add_new_points_or_box(
                inference_state=state, frame_idx=args.slice, obj_id=1, box=box)
            if key_logits is None:
                key_logits = logits[0, 0].float().cpu().numpy()
            for t, _, out in predictor.propagate_in_video(state, reverse=reverse):
                segs[t, (out[0] > 0.0).cpu().numpy()[0]] = 1
            predictor.reset_state(state)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if segs.max() > 0:  # getLargestCC: skimage's label, full connectivity
        labels, _ = ndimage.label(segs, structure=np.ones((3, 3, 3)))
        segs = np.uint8(labels == np.argmax(np.bincount(labels.flat)[1:]) + 1)
    np.savez_compressed(Path(args.work).resolve() / "official.npz", segs=segs, key_logits=key_logits,
                        seconds=seconds)


# ------------------------------------------------------------------ segloop's side (driver)


def _synthetic(path: Path, shape: tuple[int, int, int]) -> None:
    import nibabel as nib

    rng = np.random.default_rng(0)
    x, y, z = (np.arange(n, dtype=np.float32) for n in shape)
    cx, cy, cz = shape[0] * 0.4, shape[1] * 0.55, shape[2] / 2
    e = (((x[:, None, None] - cx) / (shape[0] * 0.15)) ** 2
         + ((y[None, :, None] - cy) / (shape[1] * 0.1)) ** 2
         + ((z[None, None, :] - cz) / (shape[2] * 0.3)) ** 2)
    data = rng.normal(-100.0, 30.0, shape).astype(np.float32)
    data[e <= 1] += 220.0
    nib.save(nib.Nifti1Image(data, np.diag([-0.8, -0.8, 2.0, 1.0])), path)  # stored LPS


def _stored_box(vol: Any, box: list[int], z: int) -> tuple[list[int], int]:
    """A canonical box on canonical slice z as a stored-voxel box and slice (follows flips)."""
    marks = np.zeros(vol.canonical_shape, np.uint8)
    marks[box[0], box[1], z] = 1
    marks[box[2], box[3], z] = 2
    stored = vol.canonical_to_source(marks)
    (x0, y0, zs), (x1, y1, _) = (np.argwhere(stored == v)[0] for v in (1, 2))
    return [int(min(x0, x1)), int(min(y0, y1)), int(max(x0, x1)), int(max(y0, y1))], int(zs)


def _key_slice_delta(session: Any, vol: Any, cbox: tuple[int, ...], cz: int, sz: int,
                     official_key: np.ndarray) -> float:
    """max |delta logit| of the key slice's box prediction at the slice's size, canonical grid."""
    import torch
    import torch.nn.functional as F

    from segloop.io.radiological import view_to_slice
    from segloop.types import Prompts

    x, y = session.shape[0], session.shape[1]
    vs = session._new_video_session()  # the engine's own plumbing, one prediction
    session._add_inputs(vs, cz, Prompts.make(box=cbox), None)
    with torch.inference_mode(), session._rt.autocast():
        out = session._rt.model(vs, frame_idx=cz, run_mem_encoder=False)
    up = F.interpolate(out.pred_masks[:1].float(), size=(y, x), mode="bilinear",
                       align_corners=False)[0, 0].cpu().numpy()
    ours = view_to_slice(up)
    stored = np.zeros(vol.shape, np.float32)
    stored[:, :, sz] = official_key.T  # (rows=j, cols=i) -> (i, j)
    theirs = vol.source_to_canonical(stored)[:, :, cz]
    return float(np.abs(ours - theirs).max())


def _to_lps(src: str, dst: Path) -> None:
    import nibabel as nib

    img = nib.load(src)
    ornt = nib.orientations.ornt_transform(nib.io_orientation(img.affine),
                                           nib.orientations.axcodes2ornt(("L", "P", "S")))
    nib.save(img.as_reoriented(ornt), dst)


def _driver(args: argparse.Namespace) -> None:
    work = Path(args.work or tempfile.mkdtemp(prefix="medsam2-sbs-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.synthetic:
        args.image = str(work / "synthetic_lps.nii.gz")
        _synthetic(Path(args.image), tuple(args.synthetic))
        sx, sy, sz = args.synthetic  # canonical = stored flipped in x and y
        args.box = [int(sx * 0.45), int(sy * 0.35), int(sx * 0.75), int(sy * 0.55)]
        args.slice = sz // 2
    elif args.to_lps:
        lps = work / "input_lps.nii.gz"
        _to_lps(args.image, lps)
        args.image = str(lps)
    os.environ["SEGLOOP_HOME"] = str(work / "home")
    from segloop.engines.base import drive
    from segloop.engines.sam2 import MedSAM2Engine
    from segloop.io import load_volume
    from segloop.models.store import import_model
    from segloop.types import Prompts

    vol = load_volume(Path(args.image))
    cbox, cz = tuple(args.box), int(args.slice)
    sbox, sz_ = _stored_box(vol, args.box, cz)
    # MedSAM2's box is (x0, y0, x1, y1) = (column, row) of GetArrayFromImage's slices
    child = [args.official_python, __file__, "--official-worker", "--medsam2", str(args.medsam2),
             "--work", str(work.resolve()), "--image", str(Path(args.image).resolve()), "--slice", str(sz_),
             "--device", args.device, "--precision", args.precision, "--box", *map(str, sbox)]
    print(f"official MedSAM2 ({args.medsam2}) on {args.image} ({vol.orientation}-stored),"
          f" stored box {sbox} slice {sz_} ...", flush=True)
    subprocess.run(child, check=True)
    official = np.load(work / "official.npz")

    import_model(work / "medsam2_random.pt", "medsam2")
    engine = MedSAM2Engine(window=WINDOW, fill_holes=0, device=args.device,
                           precision=args.precision)
    session = engine.open(vol)
    session.segment_slice(cz, Prompts.make(box=cbox))  # encodes the key slice, like init
    key_delta = _key_slice_delta(session, vol, cbox, cz, sz_, official["key_logits"])
    t0 = time.perf_counter()
    drive(session.propagate(cz))
    seconds = time.perf_counter() - t0
    ours = session.mask()
    ref = vol.source_to_canonical(official["segs"].transpose(2, 1, 0).astype(bool))
    nz = ours.shape[2]
    ious = []
    for k in range(nz):
        a, b = ours[:, :, k], ref[:, :, k]
        union = int((a | b).sum())
        if union:
            ious.append(float((a & b).sum()) / union)
    dice = 2.0 * float((ours & ref).sum()) / max(1, int(ours.sum() + ref.sum()))
    out = {
        "image": args.image, "shape": list(vol.shape), "orientation": vol.orientation,
        "canonical_box": list(cbox), "canonical_slice": cz, "stored_box": sbox,
        "stored_slice": sz_,
        "device": args.device, "precision": args.precision,
        "per_slice_iou_min": min(ious) if ious else 1.0,
        "per_slice_iou_mean": float(np.mean(ious)) if ious else 1.0,
        "key_slice_max_abs_delta_logit": key_delta, "dice": dice,
        "voxels_differing": int((ours != ref).sum()),
        "voxels_official": int(ref.sum()), "voxels_segloop": int(ours.sum()),
        "official_slices_per_s": nz / float(official["seconds"]),
        "segloop_slices_per_s": nz / seconds,
    }
    out["speed_ratio_segloop_over_official"] = (out["segloop_slices_per_s"]
                                                / out["official_slices_per_s"])
    print(json.dumps(out, indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--medsam2", type=Path, required=True, help="MedSAM2 checkout (not committed)")
    p.add_argument("--official-python", default=sys.executable,
                   help="python that has MedSAM2's requirements (hydra-core)")
    p.add_argument("--image", help="NIfTI file (read as stored by MedSAM2)")
    p.add_argument("--box", type=int, nargs=4, metavar=("X0", "Y0", "X1", "Y1"))
    p.add_argument("--slice", type=int)
    p.add_argument("--synthetic", type=int, nargs=3, metavar=("X", "Y", "Z"))
    p.add_argument("--to-lps", action="store_true", help="compare on an LPS-stored copy")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--work", default=None, help="folder for the checkpoint and results")
    p.add_argument("--official-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.official_worker:
        _official_worker(args)
    else:
        if not args.synthetic and (args.image is None or args.box is None or args.slice is None):
            p.error("give --image, --box and --slice, or --synthetic X Y Z")
        _driver(args)


if __name__ == "__main__":
    main()
