"""Parity of segloop's ISM ``sam`` backend with SAM-6D's own ISM code, stage by stage.

Both sides run the same random weights of the real architectures: SAM (``--sam vit_h``, SAM-6D's
choice, or ``vit_b`` on a slow CPU) and DINOv2 ViT-L/14, built by SAM-6D's own code and every
floating tensor perturbed (seeded), saved under SAM-6D's checkpoint names; segloop loads the same
files through its key maps (``segloop.models.sam_v1.sam_original_to_hf`` and
``segloop.ism.dinov2_convert.dinov2_original_to_hf``). SAM-6D's ``run_inference_custom.py`` runs
UNCHANGED in a separate process (``parity_ism_official.py``: it records what its methods return),
on SAM-6D's example scene with the templates ``segloop ism render`` wrote. Stages compared:

1. proposals: SAM-6D's SAM automatic masks vs segloop's generator (same image, grid, thresholds):
   counts and the IoU of greedily matched masks;
2. template descriptors (42 × CLS and 42 × 256 patch tokens) and proposal descriptors, on
   *identical* proposals (segloop's ``classic`` proposals, the first ``--n-proposals`` after the
   size filter, injected into both pipelines): max |Δ|;
3. scores (semantic, best template, appearance, visible ratio, geometric, final) twice: from each
   side's own descriptors, and from SAM-6D's descriptors fed to segloop's scoring (the scoring
   code alone);
4. NMS (0.25, as SAM-6D's ``test_step``; ``run_inference_custom.py`` itself keeps every
   proposal) on SAM-6D's boxes and final scores: kept indices;
5. detections: segloop's ``IsmPipeline`` end to end on the injected proposals vs SAM-6D's scores
   after its NMS: kept set, order, score Δ, IoU of matched masks.

The official code is not part of segloop: fetch JiehongLin/SAM-6D yourself and pass
``SAM-6D/Instance_Segmentation_Model`` as ``--sam6d-code``. Its extra imports (hydra-core,
omegaconf, trimesh, distinctipy, ruamel.yaml, opencv-python-headless) go into a scratch folder
(``pip install --no-deps --target DIR ...``) passed as ``--extra-site``; torchvision and
pytorch_lightning get the stand-ins described in ``parity_ism_official.py``.

    PYTHONPATH=src python benchmarks/parity_ism.py \\
        --sam6d-code /work/scratch-sam6d/SAM-6D/Instance_Segmentation_Model \\
        --extra-site /work/scratch-sam6d/site --work /work/scratch-sam6d/run_b --sam vit_b \\
        --points-per-side 16 --n-proposals 16

SAM-6D's real sizes on a slow CPU: ``--sam vit_h --dino dinov2_vitl14`` with ``--templates N``, the
first N of the 42 level-0 views (SAM-6D's code scores against every view in its ``templates/``
folder, view i keeping pose i; N ≥ 5 for its top-5 average), and fewer points and proposals:

    nice -n 10 env PYTHONPATH=src python benchmarks/parity_ism.py \\
        --sam6d-code /work/scratch-ism/SAM-6D/Instance_Segmentation_Model \\
        --extra-site /work/scratch-ism/site --work /work/scratch-ism/run_h --sam vit_h \\
        --dino dinov2_vitl14 --points-per-side 8 --n-proposals 8 --templates 10 \\
        --stability-score-thresh 0 --pred-iou-thresh -1

On a GPU (``--device cuda``, the default when torch sees one, as SAM-6D's own code) both sides
run there in full fp32 (TF32 off for matrix products and cuDNN convolutions, on both sides);
``--device cpu`` hides the GPU from SAM-6D's process too. SAM-6D's real sizes and thresholds:

    PYTHONPATH=src python benchmarks/parity_ism.py --sam6d-code ... --extra-site ... \
        --work /dev/shm/parity_ism --device cuda --threads 16 --sam vit_h --dino dinov2_vitl14 \
        --points-per-side 32 --templates 42 --n-proposals 16

Random weights may keep no proposal at SAM-6D's thresholds (stability 0.97, predicted IoU 0.88,
semantic confidence 0.2): ``--stability-score-thresh 0 --pred-iou-thresh -1 --confidence-thresh 0``
compares every stage on many proposals.

segloop's side describes the templates once: its pipeline run (stage 5) is handed those
descriptors (and, for a view subset, the templates: the service itself loads whole levels only).

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from segloop.ism.classic import ClassicBackend
from segloop.ism.mesh import read_ply
from segloop.ism.pipeline import IsmPipeline
from segloop.ism.render import render_templates
from segloop.ism.scoring import ScoreConfig, box_iou, filter_small, nms, score_proposals
from segloop.ism.templates import count_templates, load_templates
from segloop.ism.types import BackendName, Descriptors, Proposals, Scene, Templates

SCENE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sam6d"
DRIVER = Path(__file__).resolve().with_name("parity_ism_official.py")
DINO_SIZES: dict[str, dict[str, int]] = {
    "dinov2_vitl14": {},
    "dinov2_vitb14": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                      "intermediate_size": 3072},
    "dinov2_vits14": {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6,
                      "intermediate_size": 1536}}
SAM_FILES = {"vit_h": ("sam_vit_h_4b8939.pth", "sam-vit-h"), "vit_b": ("sam_vit_b_01ec64.pth", "sam-vit-b")}


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / u) if u else 1.0


def _match(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching of masks a[i] ↔ b[j] by IoU (best pairs first)."""
    if not len(a) or not len(b):
        return []
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None] - inter
    iou = inter / np.maximum(union, 1)
    out, used_a, used_b = [], set(), set()
    for flat in np.argsort(-iou, axis=None):
        i, j = divmod(int(flat), iou.shape[1])
        if i in used_a or j in used_b or iou[i, j] <= 0:
            continue
        used_a.add(i)
        used_b.add(j)
        out.append((i, j, float(iou[i, j])))
    return out


def _maxd(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("nan")
    return float(np.abs(a - b).max()) if a.size else 0.0


class _Injected:
    """A backend that returns fixed proposals and delegates descriptors."""

    def __init__(self, inner: object, props: Proposals) -> None:
        self.inner = inner
        self.props = props

    def proposals(self, scene: Scene, stability_score_thresh: float) -> Proposals:
        return self.props

    def describe_templates(self, templates: Templates) -> Descriptors:
        return self.inner.describe_templates(templates)  # type: ignore[attr-defined, no-any-return]

    def describe_proposals(self, scene: Scene, proposals: Proposals) -> Descriptors:
        return self.inner.describe_proposals(scene, proposals)  # type: ignore[attr-defined, no-any-return]


def _start_official(args: argparse.Namespace, work: Path,
                    env: dict[str, str]) -> subprocess.Popen[bytes] | None:
    """Write the random weights (once), then start SAM-6D's run in the background (None: reused)."""
    code = str(args.sam6d_code.resolve())
    ck = work / "checkpoints"
    if not ((ck / "segment-anything" / SAM_FILES[args.sam][0]).is_file()
            and (ck / "dinov2" / f"{args.dino}_pretrain.pth").is_file()):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(DRIVER), "make", code, str(ck), args.sam, str(args.seed),
                        args.dino], env=env, check=True)
        print(f"random weights written in {time.perf_counter() - t0:.0f} s")
    if args.reuse and (work / "official.npz").is_file():
        return None
    return subprocess.Popen([sys.executable, str(DRIVER), "run", code, str(work), str(work / "args.json")],
                            env=env)


def _score_config(args: argparse.Namespace) -> ScoreConfig:
    return ScoreConfig(confidence_thresh=args.confidence_thresh)


def _strict_fp32() -> None:
    """Full fp32 on a GPU for both sides (cuDNN's convolutions default to TF32: SAM's and DINOv2's
    patch embeddings would then round differently from one algorithm choice to the next)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def _first_templates(tpl: Templates, full: Path, tdir: Path, n: int) -> Templates:
    """Copy views 0..n-1 of ``full`` into ``tdir`` (SAM-6D's code scores against every view found
    there; view i keeps pose i of level 0) and return the same views of ``tpl``."""
    if not 5 <= n <= len(tpl.rgb):
        raise SystemExit(f"--templates {n}: SAM-6D averages the best 5 views; give 5..{len(tpl.rgb)}")
    if tdir.exists():
        shutil.rmtree(tdir)
    tdir.mkdir()
    for i in range(n):
        for name in (f"rgb_{i}.png", f"mask_{i}.png", f"xyz_{i}.npy"):
            shutil.copy2(full / name, tdir / name)
    return Templates(rgb=tpl.rgb[:n], masks=tpl.masks[:n], rotations=tpl.rotations[:n], points=tpl.points,
                     source=str(tdir))


def _segloop_backend(args: argparse.Namespace, work: Path) -> object:
    import torch
    from transformers import Dinov2Config, Dinov2Model, SamConfig, SamModel

    from segloop.ism.dinov2_convert import dinov2_original_to_hf
    from segloop.ism.sam_backend import AmgConfig, SamBackend
    from segloop.models.registry import get_spec
    from segloop.models.sam_v1 import sam_original_to_hf

    fname, reg = SAM_FILES[args.sam]
    sam = SamModel(SamConfig(**get_spec(reg).config))
    sam.load_state_dict(sam_original_to_hf(torch.load(work / "checkpoints" / "segment-anything" / fname)),
                        strict=True)
    sam = sam.to(args.device)
    dino = Dinov2Model(Dinov2Config(**{**get_spec("dinov2-vitl14").config, **DINO_SIZES[args.dino]}))
    dino.load_state_dict(dinov2_original_to_hf(
        torch.load(work / "checkpoints" / "dinov2" / f"{args.dino}_pretrain.pth")), strict=True)
    dino = dino.to(args.device)
    return SamBackend(sam, dino, AmgConfig(points_per_side=args.points_per_side,
                                           pred_iou_thresh=args.pred_iou_thresh))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sam6d-code", type=Path, required=True)
    ap.add_argument("--extra-site", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/parity_ism"))
    ap.add_argument("--scene", type=Path, default=SCENE)
    ap.add_argument("--sam", choices=sorted(SAM_FILES), default="vit_h")
    ap.add_argument("--dino", choices=sorted(DINO_SIZES), default="dinov2_vitl14",
                    help="DINOv2 size (SAM-6D: dinov2_vitl14; smaller ones for a slow CPU)")
    ap.add_argument("--points-per-side", type=int, default=32)
    ap.add_argument("--n-proposals", type=int, default=16)
    ap.add_argument("--stability-score-thresh", type=float, default=0.97)
    ap.add_argument("--pred-iou-thresh", type=float, default=0.88,
                    help="SAM-6D: 0.88; random weights may need lower (SAM-6D's code fails with no mask)")
    ap.add_argument("--confidence-thresh", type=float, default=ScoreConfig().confidence_thresh,
                    help="semantic score a proposal needs to be scored further, on both sides (SAM-6D: "
                         "0.2; random weights may keep none)")
    ap.add_argument("--templates", type=int, default=42,
                    help="score against the first N of the 42 level-0 views (SAM-6D: 42; fewer on slow CPUs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default=None,
                    help="cpu or cuda for both sides (default: cuda when available, as SAM-6D's code)")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse WORK/official.npz, WORK/ours.npz and WORK/proposals.npz of an earlier run")
    ap.add_argument("--ours-only", action="store_true", help="compute segloop's side only (WORK/ours.npz)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    _strict_fp32()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    scene_dir = args.scene.resolve()
    cad = scene_dir / "obj_000005.ply"
    tdir = work / "templates"
    full = tdir if args.templates == 42 else work / "templates_42"
    if count_templates(full) == 0:
        full.mkdir(exist_ok=True)
        render_templates(read_ply(cad), full, level=0)
    tpl = load_templates(full, cad)
    if args.templates != 42:  # the first N views, for SAM-6D's code (it reads every view in the folder)
        tpl = _first_templates(tpl, full, tdir, args.templates)
    cam = json.loads((scene_dir / "camera.json").read_text())
    K = np.array(cam["cam_K"], dtype=np.float64).reshape(3, 3)
    rgb = np.asarray(Image.open(scene_dir / "rgb.png").convert("RGB"))
    depth = np.asarray(Image.open(scene_dir / "depth.png")).astype(np.float32) * float(cam["depth_scale"])
    scene = Scene(rgb=rgb, depth_mm=depth, K=K)
    cfg = _score_config(args)

    if args.reuse and (work / "proposals.npz").is_file():
        saved = np.load(work / "proposals.npz")
        props = Proposals(masks=saved["masks"], boxes=saved["boxes"].astype(np.float64))
    else:
        props = ClassicBackend().proposals(scene, args.stability_score_thresh)
        props = props.subset(filter_small(props, cfg))
        props = props.subset(np.arange(min(args.n_proposals, len(props))))
        np.savez(work / "proposals.npz", masks=props.masks, boxes=props.boxes.astype(np.int64))
    np.save(work / "points.npy", tpl.points)
    (work / "args.json").write_text(json.dumps({
        "proposals": str(work / "proposals.npz"), "points": str(work / "points.npy"),
        "cad": str(cad), "rgb": str(scene_dir / "rgb.png"), "depth": str(scene_dir / "depth.png"),
        "cam": str(scene_dir / "camera.json"), "sam_type": args.sam, "dino": args.dino,
        "points_per_side": args.points_per_side, "stability_score_thresh": args.stability_score_thresh,
        "pred_iou_thresh": args.pred_iou_thresh, "device": args.device,
        "confidence_thresh": args.confidence_thresh}))
    path = os.pathsep.join(p for p in (str(args.extra_site.resolve()), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "PARITY_THREADS": str(args.threads)}
    if args.device == "cpu":  # SAM-6D's code takes the GPU whenever torch sees one
        env["CUDA_VISIBLE_DEVICES"] = ""
    t0 = time.perf_counter()
    proc = None if args.ours_only else _start_official(args, work, env)
    if args.reuse and (work / "ours.npz").is_file():
        ours = dict(np.load(work / "ours.npz"))
    else:
        ours = _ours(args, work, scene, tpl, props, tdir, cad)
        np.savez_compressed(work / "ours.npz", **ours)
        print(f"segloop side: {time.perf_counter() - t0:.0f} s")
    if args.ours_only:
        return
    if proc is not None and proc.wait() != 0:
        raise SystemExit(f"SAM-6D's run failed (exit {proc.returncode})")
    print(f"both sides done in {time.perf_counter() - t0:.0f} s (device {args.device})")
    _report(args, dict(np.load(work / "official.npz")), ours, scene, tpl, props, cfg, work)


def _ours(args: argparse.Namespace, work: Path, scene: Scene, tpl: Templates, props: Proposals, tdir: Path,
          cad: Path) -> dict[str, np.ndarray]:
    """segloop's side on the same weights: SAM proposals, descriptors, scores, pipeline detections."""
    be = _segloop_backend(args, work)
    sam = be.proposals(scene, args.stability_score_thresh)  # type: ignore[attr-defined]
    ref = be.describe_templates(tpl)  # type: ignore[attr-defined]
    query = be.describe_proposals(scene, props)  # type: ignore[attr-defined]
    s = score_proposals(scene, props, query, ref, tpl, _score_config(args))
    pipe = IsmPipeline(_score_config(args))
    pipe.add_backend(BackendName.SAM, _Injected(be, props))  # type: ignore[arg-type]
    if len(tpl.rgb) != 42:  # a view subset: the service only loads whole levels, so hand it the subset
        pipe._templates[(str(tdir), str(cad))] = tpl
    pipe._descriptors[(str(tdir), str(cad), BackendName.SAM)] = ref  # the same backend's, computed above
    res = pipe.run(scene, BackendName.SAM, tdir, cad, args.stability_score_thresh)
    assert np.array_equal(pipe.templates(tdir, cad).points, tpl.points)
    h, w = scene.rgb.shape[:2]
    return {"sam_masks": sam.masks, "sam_boxes": sam.boxes, "tpl_global": ref.global_,
            "tpl_patches": ref.patches, "query_global": query.global_, "query_patches": query.patches,
            "sel_idx": s.index, "best_template": s.template, "semantic": s.semantic,
            "appearance": s.appearance, "visible": s.visible_ratio, "geometric": s.geometric,
            "final": s.final,
            "det_masks": (np.stack([d.mask for d in res.detections]) if res.detections
                          else np.zeros((0, h, w), dtype=bool)),
            "det_scores": np.array([d.score for d in res.detections])}


def _report(args: argparse.Namespace, off: dict[str, np.ndarray], ours: dict[str, np.ndarray], scene: Scene,
            tpl: Templates, props: Proposals, cfg: ScoreConfig, work: Path) -> None:
    rows: list[tuple[str, str]] = []

    # 1. proposals
    m = _match(ours["sam_masks"], off["sam_masks"])
    rows.append(("proposals: count segloop / SAM-6D", f"{len(ours['sam_masks'])} / {len(off['sam_masks'])}"))
    rows.append(("proposals: matched pairs, min / mean mask IoU",
                 f"{len(m)}, {min((x[2] for x in m), default=float('nan')):.4f} / "
                 f"{np.mean([x[2] for x in m]) if m else float('nan'):.4f}"))
    if m:
        bi = np.array([ours["sam_boxes"][i] for i, _, _ in m])
        bo = np.array([off["sam_boxes"][j] for _, j, _ in m])
        rows.append(("proposals: max |Δ| box of matched pairs (px)", f"{_maxd(bi, bo):.1f}"))
    ref = Descriptors(global_=ours["tpl_global"], patches=ours["tpl_patches"])
    query = Descriptors(global_=ours["query_global"], patches=ours["query_patches"])

    # 2. descriptors
    rows.append(("template CLS descriptors: max |Δ| (max |x|)",
                 f"{_maxd(ref.global_, off['tpl_global'][:len(tpl.rgb)]):.3g} "
                 f"({np.abs(off['tpl_global']).max():.3g})"))
    rows.append(("template patch descriptors (unit rows): max |Δ|",
                 f"{_maxd(ref.patches, off['tpl_patches']):.3g}"))
    rows.append(("proposal CLS descriptors: max |Δ| (max |x|)",
                 f"{_maxd(query.global_, off['query_global']):.3g} "
                 f"({np.abs(off['query_global']).max():.3g})"))
    rows.append(("proposal patch descriptors: max |Δ|", f"{_maxd(query.patches, off['query_patches']):.3g}"))

    # 3. scores
    sel = off["sel_idx"].astype(np.int64)

    def compare(tag: str, s: object) -> None:
        same = np.array_equal(s.index, sel)  # type: ignore[attr-defined]
        rows.append((f"scores ({tag}): kept proposals equal", f"{same} ({len(s.index)} / {len(sel)})"))  # type: ignore[attr-defined]
        if not same:
            return
        rows.append((f"scores ({tag}): best template equal",
                     str(np.array_equal(s.template, off["best_template"]))))  # type: ignore[attr-defined]
        for name, ours_key, key in (("semantic", "semantic", "semantic"),
                                    ("appearance", "appearance", "appearance"),
                                    ("visible ratio", "visible_ratio", "visible"),
                                    ("geometric", "geometric", "geometric")):
            rows.append((f"scores ({tag}): {name} max |Δ|", f"{_maxd(getattr(s, ours_key), off[key]):.3g}"))
        rows.append((f"scores ({tag}): final max |Δ|", f"{_maxd(s.final, off['final']):.3g}"))  # type: ignore[attr-defined]

    compare("own descriptors", score_proposals(scene, props, query, ref, tpl, cfg))  # = ours["final"]
    theirs = Descriptors(global_=off["query_global"], patches=off["query_patches"])
    tref = Descriptors(global_=off["tpl_global"], patches=off["tpl_patches"])
    s_b = score_proposals(scene, props, theirs, tref, tpl, cfg)
    compare("SAM-6D's descriptors", s_b)
    uv = off["image_uv"]
    if len(uv):
        from segloop.ism.scoring import projected_boxes

        pb = projected_boxes(scene, props.subset(sel), tpl.rotations[off["best_template"]], tpl.points)
        their_pb = np.concatenate([uv.min(1), uv.max(1)], axis=-1)
        rows.append(("projected CAD boxes: max |Δ| (px)", f"{_maxd(pb, their_pb):.3g}"))
        # SAM-6D's compute_iou: 0 for every proposal as soon as one pair does not overlap
        sb = props.boxes[sel]
        wh = np.minimum(pb[:, 2:], sb[:, 2:]) - np.maximum(pb[:, :2], sb[:, :2])
        rule = bool((wh > 0).all())
        ours_rule = box_iou(pb, sb) if rule else np.zeros(len(sel))
        rows.append(("geometric with SAM-6D's all-or-nothing IoU rule: max |Δ| (rule fired)",
                     f"{_maxd(ours_rule, off['geometric']):.3g} ({not rule})"))

    # 4. NMS on SAM-6D's boxes and final scores
    keep = nms(props.boxes[sel].astype(np.float64), off["final"].astype(np.float64), cfg.nms_thresh)
    rows.append(("NMS on SAM-6D's final scores: kept indices equal (in order)",
                 f"{np.array_equal(keep, off['nms_keep'])} ({len(keep)} / {len(off['nms_keep'])})"))

    # 5. detections: segloop's pipeline end to end on the same proposals vs SAM-6D after its NMS
    k_off = sel[off["nms_keep"]]
    off_scores = off["final"][off["nms_keep"]]
    m = _match(ours["det_masks"], props.masks[k_off])
    rows.append(("detections: count segloop / SAM-6D", f"{len(ours['det_masks'])} / {len(k_off)}"))
    if m:
        rows.append(("detections: matched, min mask IoU", f"{len(m)}, {min(x[2] for x in m):.4f}"))
        rows.append(("detections: max |Δ| score of matched",
                     f"{max(abs(float(ours['det_scores'][i]) - float(off_scores[j])) for i, j, _ in m):.3g}"))
        rows.append(("detections: same order", str([j for _, j, _ in sorted(m)] == list(range(len(m))))))
    w = max(len(r[0]) for r in rows)
    print(f"\nSAM {args.sam}, DINOv2 {args.dino} on {args.device}, random perturbed weights "
          f"(seed {args.seed}); {args.points_per_side}x{args.points_per_side} points; "
          f"{len(props)} injected proposals")
    for k, v in rows:
        print(f"{k:<{w}}  {v}")
    (work / "parity.json").write_text(json.dumps(dict(rows), indent=1))


if __name__ == "__main__":
    main()
