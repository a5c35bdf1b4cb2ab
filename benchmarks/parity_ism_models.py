"""Model-level parity of segloop's ISM ``sam`` backend with SAM-6D's own code at the REAL sizes.

SAM ViT-H and DINOv2 ViT-L/14 (SAM-6D's choices), built by SAM-6D's own code with every floating
tensor perturbed (seeded; ``parity_ism_official.py make``, the weights ``parity_ism.py`` uses),
saved under SAM-6D's checkpoint names; segloop loads the same files through its key maps
(``segloop.models.sam_v1.sam_original_to_hf``, ``segloop.ism.dinov2_convert.dinov2_original_to_hf``).
SAM-6D's side runs in a SEPARATE process (this file with ``--official``): its models are built
from its own hydra configs (``configs/model/ISM_sam.yaml``: ``CustomSamAutomaticMaskGenerator``
and ``CustomDINOv2``, instantiated as ``run_inference_custom.py`` does) and its methods are
called unchanged; a few are wrapped to record what they return. On SAM-6D's example scene:

a. SAM's image embedding (1, 256, 64, 64) of the image at width 640 (SAM-6D's
   ``segmentor_width_size``), as each side's generator computes it;
b. the decoder outputs of two point batches — the whole ``--points-per-side`` grid's first batch
   (8×8 = 64 points by default) and the first batch of 64 points of the full 32×32 grid — for 3
   masks per point: mask logits at image size, predicted IoU and stability score (max |Δ|), and
   the masks (logits > 0: min IoU, pixels that differ); then both generators' proposals on the
   ``--points-per-side`` grid (SAM-6D's ``generate_masks`` vs segloop's ``SamBackend.proposals``,
   permissive thresholds by default: every mask is kept before box NMS), matched by IoU;
c. DINOv2 ViT-L CLS tokens and SAM-6D's masked, L2-normalised patch tokens of the 42 templates
   that ``segloop ism render`` wrote (prepared as ``run_inference_custom.py`` prepares them) and
   of ``--n-proposals`` proposal crops (segloop's ``classic`` proposals after the size filter, as
   ``parity_ism.py`` injects them; SAM-6D's ``CustomDINOv2.forward`` crops them).

The official code is not part of segloop: pass SAM-6D's ``Instance_Segmentation_Model`` as
``--sam6d-code`` and its extra imports (hydra-core, omegaconf, trimesh, distinctipy, ruamel.yaml,
opencv-python-headless) as ``--extra-site`` (see ``parity_ism.py``).

    nice -n 5 env PYTHONPATH=src python benchmarks/parity_ism_models.py \\
        --sam6d-code .../SAM-6D/Instance_Segmentation_Model --extra-site /tmp/ismsite \\
        --work /tmp/ismcpu/work

The two sides run at once (2 torch threads each by default). Prints one table (and
WORK/parity_models.json); asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GRID_BATCH = 64  # SAM-6D's points_per_batch
#: random weights give mask logits below SAM's stability offset (1.0), so every stability score is 0
#: there; each side's own stability function also runs at this offset, where the logits do cross
SMALL_OFFSET = 0.05


def _stats(tag: str, masks_logits: object, iou: object, stab: object, stab_small: object,
           rec: dict[str, np.ndarray], work: Path, side: str) -> None:
    """Record one decoder batch: (B·3,) predicted IoU and stability (SAM's offset and
    SMALL_OFFSET), packed masks, logits (npy)."""
    lg = masks_logits.detach().float().cpu()  # type: ignore[attr-defined]
    rec[f"{tag}_iou"] = iou.detach().float().cpu().flatten().numpy()  # type: ignore[attr-defined]
    rec[f"{tag}_stab"] = stab.detach().float().cpu().flatten().numpy()  # type: ignore[attr-defined]
    rec[f"{tag}_stab_small"] = stab_small.detach().float().cpu().flatten().numpy()  # type: ignore[attr-defined]
    rec[f"{tag}_masks"] = np.packbits((lg > 0).numpy(), axis=-1)
    rec[f"{tag}_shape"] = np.array(lg.shape)
    np.save(work / f"{side}_{tag}_logits.npy", lg.numpy())


def _scene(scene_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from PIL import Image

    cam = json.loads((scene_dir / "camera.json").read_text())
    K = np.array(cam["cam_K"], dtype=np.float64).reshape(3, 3)
    rgb = np.asarray(Image.open(scene_dir / "rgb.png").convert("RGB"))
    depth = np.asarray(Image.open(scene_dir / "depth.png")).astype(np.float32) * float(cam["depth_scale"])
    return rgb, depth, K


# ---------------------------------------------------------------- SAM-6D's side (child process)

def official(args_path: str) -> None:
    """SAM-6D's generator and descriptor model, built from its configs; records into official.npz."""
    a = json.loads(Path(args_path).read_text())
    sys.path.insert(0, str(HERE))
    import parity_ism_official as drv

    drv._standin_torchvision()
    drv._standin_lightning()
    import torch

    torch.set_num_threads(int(a["threads"]))
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    code, work = a["code"], Path(a["work"])
    sys.path.insert(0, code)
    os.chdir(work)  # the configs' checkpoint_dir is ./checkpoints/...
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from segment_anything.utils.amg import (
        build_all_layer_point_grids,
        build_point_grid,
        calculate_stability_score,
    )

    with initialize_config_dir(version_base=None, config_dir=os.path.join(code, "configs")):
        cfg = compose(config_name="run_inference.yaml")
    with initialize_config_dir(version_base=None, config_dir=os.path.join(code, "configs", "model")):
        cfg.model = compose(config_name="ISM_sam.yaml")
    cfg.model.segmentor_model.stability_score_thresh = a["stability_score_thresh"]
    cfg.model.segmentor_model.pred_iou_thresh = a["pred_iou_thresh"]
    cfg.model.segmentor_model.sam.model_type = a["sam"]  # ISM_sam.yaml: vit_h
    cfg.model.descriptor_model.model_name = a["dino"]  # dinov2.yaml: dinov2_vitl14
    rec: dict[str, np.ndarray] = {}
    rgb, _, _ = _scene(Path(a["scene"]))

    # a + b: SAM
    seg = instantiate(cfg.model.segmentor_model)
    seg.point_grids = build_all_layer_point_grids(a["points_per_side"], 0, 1)
    pred = seg.predictor
    state = {"tag": "grid0", "n": 0, "extra": a["extra_grid"] > 0}
    predict_torch = pred.predict_torch
    thr, offset = pred.model.mask_threshold, seg.stability_score_offset

    def predict_recorded(*pa: object, **kw: object) -> object:
        if "embedding" not in rec:  # set_image ran just before the first batch
            rec["embedding"] = predict_torch.__self__.features.detach().float().cpu().numpy()
        masks, iou, low = predict_torch(*pa, **kw)
        flat = masks.flatten(0, 1)
        stab = calculate_stability_score(flat, thr, offset)
        if state["tag"] in ("grid0", "x32"):
            small = calculate_stability_score(flat, thr, SMALL_OFFSET)
            _stats(str(state["tag"]), flat, iou, stab, small, rec, work, "official")
        return masks, iou, low

    pred.predict_torch = predict_recorded
    process_batch = seg._process_batch

    def process_batch_then_extra(points: np.ndarray, im_size: tuple[int, int], *pa: object) -> object:
        out = process_batch(points, im_size, *pa)
        state["tag"] = f"grid{int(state['n']) + 1}"
        state["n"] = int(state["n"]) + 1
        if state["extra"]:  # the first 64 points of the 32×32 grid, on the same image embedding
            state["extra"], tag = False, state["tag"]
            state["tag"] = "x32"
            pts = build_point_grid(a["extra_grid"])[:GRID_BATCH] * np.array(im_size)[None, ::-1]
            process_batch(pts, im_size, *pa)
            state["tag"] = tag
        return out

    seg._process_batch = process_batch_then_extra
    try:
        out = seg.generate_masks(rgb)
        rec["prop_masks"] = (out["masks"] > 0.5).cpu().numpy()
        rec["prop_boxes"] = out["boxes"].float().cpu().numpy()
    except RuntimeError as e:  # its _generate_masks ends with torch.stack(list of kept masks)
        if "non-empty" not in str(e):
            raise
        rec["prop_masks"] = np.zeros((0, *rgb.shape[:2]), dtype=bool)
        rec["prop_boxes"] = np.zeros((0, 4), np.float32)
    del seg, pred
    gc.collect()
    t_sam = time.process_time() - t_cpu

    # c: DINOv2, templates as run_inference_custom.py prepares them, proposals by CustomDINOv2.forward
    from model.utils import Detections
    from PIL import Image
    from utils.bbox_utils import CropResizePad

    dino = instantiate(cfg.model.descriptor_model)
    tdir = work / "templates"
    boxes, masks, templates = [], [], []
    for idx in range(len(list(tdir.glob("*.npy")))):
        image = Image.open(tdir / f"rgb_{idx}.png")
        mask = Image.open(tdir / f"mask_{idx}.png")
        boxes.append(mask.getbbox())
        image_t = torch.from_numpy(np.array(image.convert("RGB")) / 255).float()
        mask_t = torch.from_numpy(np.array(mask.convert("L")) / 255).float()
        templates.append(image_t * mask_t[:, :, None])
        masks.append(mask_t.unsqueeze(-1))
    proc = CropResizePad(224)
    tpl = proc(images=torch.stack(templates).permute(0, 3, 1, 2), boxes=torch.tensor(np.array(boxes)))
    tmask = proc(images=torch.stack(masks).permute(0, 3, 1, 2), boxes=torch.tensor(np.array(boxes)))
    rec["tpl_cls"] = dino.compute_features(tpl, token_name="x_norm_clstoken").cpu().numpy()
    rec["tpl_patches"] = dino.compute_masked_patch_feature(tpl, tmask[:, 0, :, :]).cpu().numpy()
    inj = np.load(a["proposals"])
    det = Detections({"masks": torch.from_numpy(inj["masks"]).float(),
                      "boxes": torch.from_numpy(inj["boxes"])})
    cls, patches = dino.forward(rgb, det)
    rec["query_cls"], rec["query_patches"] = cls.cpu().numpy(), patches.cpu().numpy()
    rec["cpu_s"] = np.array([t_sam, time.process_time() - t_cpu - t_sam])
    rec["wall_s"] = np.array(time.perf_counter() - t_wall)
    np.savez_compressed(work / "official_models.npz", **rec)


# ---------------------------------------------------------------- segloop's side

def ours(args: argparse.Namespace, work: Path, rgb: np.ndarray, depth: np.ndarray,
         K: np.ndarray) -> dict[str, np.ndarray]:
    """segloop's SamBackend on the same weights: embedding, decoder batches, proposals, descriptors."""
    import parity_ism as pi
    import torch

    from segloop.ism.amg import point_grid, stability_score
    from segloop.ism.templates import load_templates
    from segloop.ism.types import Proposals, Scene

    t_cpu, t_wall = time.process_time(), time.perf_counter()
    ns = argparse.Namespace(sam=args.sam, dino=args.dino, device="cpu",
                            points_per_side=args.points_per_side, pred_iou_thresh=args.pred_iou_thresh)
    be = pi._segloop_backend(ns, work)
    rec: dict[str, np.ndarray] = {}
    embed = be._embed  # type: ignore[attr-defined]
    cache: dict[str, object] = {}

    def embed_once(im: np.ndarray) -> object:  # the generator embeds once; the batches below reuse it
        if "e" not in cache:
            cache["e"] = embed(im)
        return cache["e"]

    be._embed = embed_once  # type: ignore[attr-defined]
    h, w = rgb.shape[:2]
    if w != be.config.width:  # type: ignore[attr-defined]
        raise SystemExit("this check assumes an image 640 wide (SAM-6D's segmentor_width_size)")
    decode = be.decoder(rgb)  # type: ignore[attr-defined]
    rec["embedding"] = cache["e"][0].float().cpu().numpy()  # type: ignore[index]
    batches = [("grid0", point_grid(args.points_per_side)[:GRID_BATCH])]
    if args.extra_grid > 0:
        batches.append(("x32", point_grid(args.extra_grid)[:GRID_BATCH]))
    with torch.no_grad():
        for tag, pts in batches:
            logits, iou = decode(pts * np.array([w, h]))
            _stats(tag, logits, iou, stability_score(logits, be.config.stability_offset),  # type: ignore[attr-defined]
                   stability_score(logits, SMALL_OFFSET), rec, work, "ours")
    scene = Scene(rgb=rgb, depth_mm=depth, K=K)
    props = be.proposals(scene, args.stability_score_thresh)  # type: ignore[attr-defined]
    rec["prop_masks"], rec["prop_boxes"] = props.masks, props.boxes
    be.sam = None  # type: ignore[attr-defined]
    gc.collect()
    t_sam = time.process_time() - t_cpu
    cad = args.scene.resolve() / "obj_000005.ply"
    tpl = load_templates(work / "templates", cad)
    d = be.describe_templates(tpl)  # type: ignore[attr-defined]
    rec["tpl_cls"], rec["tpl_patches"] = d.global_, d.patches
    inj = np.load(work / "proposals_models.npz")
    q = be.describe_proposals(scene, Proposals(masks=inj["masks"], boxes=inj["boxes"].astype(np.float64)))  # type: ignore[attr-defined]
    rec["query_cls"], rec["query_patches"] = q.global_, q.patches
    rec["cpu_s"] = np.array([t_sam, time.process_time() - t_cpu - t_sam])
    rec["wall_s"] = np.array(time.perf_counter() - t_wall)
    return rec


# ---------------------------------------------------------------- report

def _unpack(rec: dict[str, np.ndarray], tag: str) -> np.ndarray:
    shape = tuple(int(x) for x in rec[f"{tag}_shape"])
    return np.unpackbits(rec[f"{tag}_masks"], axis=-1, count=shape[-1]).astype(bool)


def report(args: argparse.Namespace, off: dict[str, np.ndarray], our: dict[str, np.ndarray], work: Path,
           load: tuple[float, float]) -> None:
    import parity_ism as pi

    rows: list[tuple[str, str]] = []
    e_o, e_s = off["embedding"], our["embedding"]
    rows.append((f"(a) SAM {args.sam} image embedding: max |Δ| (max |x|)",
                 f"{pi._maxd(e_s, e_o):.3g} ({np.abs(e_o).max():.3g})"))
    for tag, what in (("grid0", f"{args.points_per_side}x{args.points_per_side} grid, batch 0"),
                      ("x32", f"{args.extra_grid}x{args.extra_grid} grid, batch 0")):
        if f"{tag}_iou" not in off or f"{tag}_iou" not in our:
            continue
        lo = np.load(work / f"official_{tag}_logits.npy", mmap_mode="r")
        ls = np.load(work / f"ours_{tag}_logits.npy", mmap_mode="r")
        rows.append((f"(b) {what}: mask logits max |Δ| (max |x|), {lo.shape[0]} masks",
                     f"{pi._maxd(ls, lo):.3g} ({np.abs(lo).max():.3g})"))
        mo, ms = _unpack(off, tag), _unpack(our, tag)
        ious = [pi._mask_iou(x, y) for x, y in zip(ms, mo, strict=True)]
        rows.append((f"(b) {what}: masks (logits > 0) min IoU, pixels differing",
                     f"{min(ious):.6f}, {int((mo != ms).sum())} of {mo.size}"))
        rows.append((f"(b) {what}: iou_predictions max |Δ|",
                     f"{pi._maxd(our[f'{tag}_iou'], off[f'{tag}_iou']):.3g}"))
        rows.append((f"(b) {what}: stability scores max |Δ| (non-zero of {len(off[f'{tag}_stab'])})",
                     f"{pi._maxd(our[f'{tag}_stab'], off[f'{tag}_stab']):.3g} "
                     f"({int((off[f'{tag}_stab'] > 0).sum())})"))
        if f"{tag}_stab_small" in off:
            rows.append((f"(b) {what}: stability at offset {SMALL_OFFSET} max |Δ| (non-zero)",
                         f"{pi._maxd(our[f'{tag}_stab_small'], off[f'{tag}_stab_small']):.3g} "
                         f"({int((off[f'{tag}_stab_small'] > 0).sum())})"))
    po, ps = off["prop_masks"], our["prop_masks"]
    nonempty = po.reshape(len(po), -1).any(1) if len(po) else np.zeros(0, bool)
    rows.append(("(b) proposals: count segloop / SAM-6D (non-empty)",
                 f"{len(ps)} / {len(po)} ({int(nonempty.sum())})"))
    m = pi._match(ps, po[nonempty])
    if m:
        rows.append(("(b) proposals: matched pairs, min / mean mask IoU",
                     f"{len(m)}, {min(x[2] for x in m):.6f} / {np.mean([x[2] for x in m]):.6f}"))
        bo = off["prop_boxes"][nonempty]
        bs = np.array([our["prop_boxes"][i] for i, _, _ in m])
        rows.append(("(b) proposals: max |Δ| box of matched pairs (px)",
                     f"{pi._maxd(bs, np.array([bo[j] for _, j, _ in m])):.3g}"))
    n_t = len(off["tpl_cls"])
    rows.append((f"(c) DINOv2 CLS, {n_t} templates: max |Δ| (max |x|)",
                 f"{pi._maxd(our['tpl_cls'], off['tpl_cls']):.3g} ({np.abs(off['tpl_cls']).max():.3g})"))
    rows.append((f"(c) DINOv2 patch tokens (masked, unit rows), {n_t} templates: max |Δ|",
                 f"{pi._maxd(our['tpl_patches'], off['tpl_patches']):.3g}"))
    n_q = len(off["query_cls"])
    rows.append((f"(c) DINOv2 CLS, {n_q} proposal crops: max |Δ| (max |x|)",
                 f"{pi._maxd(our['query_cls'], off['query_cls']):.3g} "
                 f"({np.abs(off['query_cls']).max():.3g})"))
    rows.append((f"(c) DINOv2 patch tokens, {n_q} proposal crops: max |Δ|",
                 f"{pi._maxd(our['query_patches'], off['query_patches']):.3g}"))
    for name, r in (("segloop", our), ("SAM-6D", off)):
        c = r["cpu_s"]
        rows.append((f"CPU s {name} (SAM stage / DINOv2 stage), wall s",
                     f"{c[0]:.0f} / {c[1]:.0f}, {float(r['wall_s']):.0f}"))
    rows.append(("load average (1 min) at start / end", f"{load[0]:.1f} / {load[1]:.1f}"))
    width = max(len(r[0]) for r in rows)
    print(f"\nSAM {args.sam} + DINOv2 {args.dino} (SAM-6D: vit_h + dinov2_vitl14), random perturbed "
          f"weights (seed {args.seed}), "
          f"CPU, {args.threads} threads per side; stability >= {args.stability_score_thresh}, "
          f"pred IoU > {args.pred_iou_thresh}")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    (work / "parity_models.json").write_text(json.dumps(dict(rows), indent=1))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--official":
        official(sys.argv[2])
        return
    sys.path.insert(0, str(HERE))
    import parity_ism as pi

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sam6d-code", type=Path, required=True)
    ap.add_argument("--extra-site", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/parity_ism_models"))
    ap.add_argument("--scene", type=Path, default=pi.SCENE)
    ap.add_argument("--points-per-side", type=int, default=8,
                    help="grid of the proposals compared (≤ 8: one batch)")
    ap.add_argument("--extra-grid", type=int, default=32,
                    help="also compare the first 64-point batch of this grid (0: skip)")
    ap.add_argument("--n-proposals", type=int, default=8, help="proposal crops described by DINOv2")
    ap.add_argument("--stability-score-thresh", type=float, default=0.0)
    ap.add_argument("--pred-iou-thresh", type=float, default=-1e9,
                    help="SAM-6D: 0.88; the default keeps every mask on both sides")
    ap.add_argument("--sam", choices=sorted(pi.SAM_FILES), default="vit_h",
                    help="SAM-6D: vit_h (vit_b: a quick smoke test of this script)")
    ap.add_argument("--dino", choices=sorted(pi.DINO_SIZES), default="dinov2_vitl14",
                    help="SAM-6D: dinov2_vitl14")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reuse", action="store_true", help="report from WORK's earlier npz files")
    args = ap.parse_args()
    import torch

    from segloop.ism.classic import ClassicBackend
    from segloop.ism.mesh import read_ply
    from segloop.ism.render import render_templates
    from segloop.ism.scoring import ScoreConfig, filter_small
    from segloop.ism.templates import count_templates
    from segloop.ism.types import Scene

    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]
    work = args.work.resolve()
    (work / "templates").mkdir(parents=True, exist_ok=True)
    cad = args.scene.resolve() / "obj_000005.ply"
    if count_templates(work / "templates") == 0:
        render_templates(read_ply(cad), work / "templates", level=0)
    code = str(args.sam6d_code.resolve())
    ck = work / "checkpoints"
    if not ((ck / "segment-anything" / pi.SAM_FILES[args.sam][0]).is_file()
            and (ck / "dinov2" / f"{args.dino}_pretrain.pth").is_file()):
        subprocess.run([sys.executable, str(pi.DRIVER), "make", code, str(ck), args.sam, str(args.seed),
                        args.dino], env={**os.environ, "PYTHONPATH": str(args.extra_site.resolve())},
                       check=True)
    rgb, depth, K = _scene(args.scene.resolve())
    if not (args.reuse and (work / "official_models.npz").is_file() and (work / "ours_models.npz").is_file()):
        props = ClassicBackend().proposals(Scene(rgb=rgb, depth_mm=depth, K=K), 0.0)
        props = props.subset(filter_small(props, ScoreConfig()))
        props = props.subset(np.arange(min(args.n_proposals, len(props))))
        np.savez(work / "proposals_models.npz", masks=props.masks, boxes=props.boxes.astype(np.int64))
        (work / "args_models.json").write_text(json.dumps({
            "code": code, "work": str(work), "sam": args.sam, "dino": args.dino,
            "scene": str(args.scene.resolve()), "threads": args.threads,
            "points_per_side": args.points_per_side, "extra_grid": args.extra_grid,
            "stability_score_thresh": args.stability_score_thresh, "pred_iou_thresh": args.pred_iou_thresh,
            "proposals": str(work / "proposals_models.npz")}))
        path = os.pathsep.join(p for p in (str(args.extra_site.resolve()), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONPATH": path, "CUDA_VISIBLE_DEVICES": ""}
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--official",
                                 str(work / "args_models.json")], env=env)
        mine = ours(args, work, rgb, depth, K)
        np.savez_compressed(work / "ours_models.npz", **mine)
        print(f"segloop side done ({float(mine['wall_s']):.0f} s wall)", flush=True)
        if proc.wait() != 0:
            raise SystemExit(f"SAM-6D's side failed (exit {proc.returncode})")
    report(args, dict(np.load(work / "official_models.npz")), dict(np.load(work / "ours_models.npz")), work,
           (load0, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
