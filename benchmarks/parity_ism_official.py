"""Driver run by ``parity_ism.py`` in a SEPARATE process: SAM-6D's own ISM code, unchanged.

Not part of segloop and never imported by it. ``python parity_ism_official.py make CODE CKPT_DIR
SAM_TYPE SEED DINO`` builds SAM-6D's SAM (``segment_anything``) and DINOv2 (``model/dinov2.py``;
``dinov2_vitl14`` as SAM-6D, or ``dinov2_vits14`` / ``dinov2_vitb14`` on a slow CPU) with random
weights, perturbs every floating tensor (seeded), and saves them
under SAM-6D's checkpoint names. ``python parity_ism_official.py run CODE WORK ARGS.json`` runs
``run_inference_custom.py`` as ``__main__`` (``runpy``) with ``WORK`` as the working directory
(``checkpoints/`` and ``templates/`` there) after wrapping a few of its methods so that their
inputs/outputs are recorded into ``WORK/official.npz``:

* ``CustomSamAutomaticMaskGenerator.generate_masks``: SAM-6D's proposals (optionally with a
  smaller point grid), then replaced by the proposals in ``ARGS.json["proposals"]`` so both sides
  score *identical* proposals;
* ``CustomDINOv2.compute_features`` / ``compute_masked_patch_feature`` (templates) and
  ``forward`` (proposals): the descriptors;
* ``compute_semantic_score`` / ``compute_appearance_score`` / ``project_template_to_image`` /
  ``compute_geometric_score``: the scores; ``Detections.add_attribute("scores")``: the final
  score, then ``apply_nms_per_object_id(0.25)`` (as ``test_step``) on a copy: the kept order;
* ``trimesh.Trimesh.sample``: returns the CAD points in ``ARGS.json["points"]`` (mm) instead of a
  random sample, so the geometric scores see the same points.

torchvision is not installable next to segloop's CPU torch here: when it is missing, a stand-in
module gives the few pieces SAM-6D calls — ``transforms.ToTensor/Normalize/Compose`` (the
documented arithmetic), ``transforms.functional.resize/to_pil_image`` (PIL bilinear, what
torchvision does on a PIL image) and ``ops.nms/batched_nms/box_area`` (greedy NMS, torchvision's
documented rule: drop boxes with IoU > threshold against a kept higher-scoring box).
``pytorch_lightning`` (only a base class here; the real one imports torchmetrics → torchvision)
is replaced by a ``LightningModule = torch.nn.Module`` stand-in.
"""

from __future__ import annotations

import copy
import importlib.machinery
import importlib.util
import json
import os
import runpy
import sys
import types

import numpy as np
import torch


def _standin_torchvision() -> None:
    if importlib.util.find_spec("torchvision") is not None:
        return
    from PIL import Image

    tv = types.ModuleType("torchvision")
    tr = types.ModuleType("torchvision.transforms")
    trf = types.ModuleType("torchvision.transforms.functional")
    ops = types.ModuleType("torchvision.ops")
    opb = types.ModuleType("torchvision.ops.boxes")
    ut = types.ModuleType("torchvision.utils")

    class Compose:
        def __init__(self, ts):
            self.ts = ts

        def __call__(self, x):
            for t in self.ts:
                x = t(x)
            return x

    class ToTensor:
        def __call__(self, a):
            a = np.asarray(a)
            return torch.from_numpy(a.transpose(2, 0, 1).copy()).float().div(255.0)

    class Normalize:
        def __init__(self, mean, std):
            self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
            self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

        def __call__(self, x):
            return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def resize(img, size):
        return img.resize((int(size[1]), int(size[0])), Image.Resampling.BILINEAR)

    def to_pil_image(a):
        return Image.fromarray(np.asarray(a))

    def box_area(b):
        return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])

    def nms(boxes, scores, thr):
        order = torch.argsort(scores, descending=True, stable=True)
        keep = []
        area = box_area(boxes)
        while len(order):
            i = order[0]
            keep.append(int(i))
            rest = order[1:]
            tl = torch.maximum(boxes[i, :2], boxes[rest, :2])
            br = torch.minimum(boxes[i, 2:], boxes[rest, 2:])
            wh = (br - tl).clamp(min=0)
            inter = wh[:, 0] * wh[:, 1]
            iou = inter / (area[i] + area[rest] - inter)
            order = rest[iou <= thr]
        return torch.tensor(keep, dtype=torch.long)

    def batched_nms(boxes, scores, idxs, iou_threshold):
        if not len(boxes):
            return torch.zeros(0, dtype=torch.long)
        off = idxs.to(boxes) * (boxes.max() + 1)
        return nms(boxes + off[:, None], scores, iou_threshold)

    def _unused(*a, **k):
        raise RuntimeError("torchvision stand-in: not used by the ISM inference path")

    tr.Compose, tr.ToTensor, tr.Normalize = Compose, ToTensor, Normalize
    trf.resize, trf.to_pil_image = resize, to_pil_image
    ops.nms = opb.nms = nms
    ops.batched_nms = opb.batched_nms = batched_nms
    ops.box_area = opb.box_area = box_area
    ut.make_grid = ut.save_image = _unused
    tv.transforms, tv.ops, tv.utils = tr, ops, ut
    tr.functional, ops.boxes = trf, opb
    for name, mod in (("torchvision", tv), ("torchvision.transforms", tr),
                      ("torchvision.transforms.functional", trf), ("torchvision.ops", ops),
                      ("torchvision.ops.boxes", opb), ("torchvision.utils", ut)):
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)  # lightning probes find_spec
        mod.__version__ = "0.0+standin"
        sys.modules[name] = mod


def _standin_lightning() -> None:
    """SAM-6D's ISM classes only subclass ``pl.LightningModule`` (no trainer in inference); the
    real package drags torchmetrics, which needs the real torchvision."""
    pl = types.ModuleType("pytorch_lightning")
    pl.__spec__ = importlib.machinery.ModuleSpec("pytorch_lightning", None)

    class LightningModule(torch.nn.Module):
        pass
    pl.LightningModule = LightningModule
    sys.modules["pytorch_lightning"] = pl


def _perturb(state: dict, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k in sorted(state):
        t = state[k]
        if t.is_floating_point():
            t = t + 0.02 * torch.randn(t.shape, generator=g)
        out[k] = t.contiguous()
    return out


DINO_ARCH = {"dinov2_vitl14": "vit_large", "dinov2_vitb14": "vit_base", "dinov2_vits14": "vit_small"}


def make(code: str, ckpt: str, sam_type: str, seed: int, dino: str = "dinov2_vitl14") -> None:
    sys.path.insert(0, code)
    from model.dinov2 import _make_dinov2_model
    from segment_anything import sam_model_registry

    torch.manual_seed(seed)
    os.makedirs(f"{ckpt}/segment-anything", exist_ok=True)
    os.makedirs(f"{ckpt}/dinov2", exist_ok=True)
    names = {"vit_h": "sam_vit_h_4b8939.pth", "vit_b": "sam_vit_b_01ec64.pth",
             "vit_l": "sam_vit_l_0b3195.pth"}
    if not os.path.isfile(f"{ckpt}/segment-anything/{names[sam_type]}"):
        sam = sam_model_registry[sam_type](checkpoint=None)
        torch.save(_perturb(sam.state_dict(), seed), f"{ckpt}/segment-anything/{names[sam_type]}")
    model = _make_dinov2_model(arch_name=DINO_ARCH[dino], pretrained=False)
    torch.save(_perturb(model.state_dict(), seed + 1), f"{ckpt}/dinov2/{dino}_pretrain.pth")


def run(code: str, work: str, args_path: str) -> None:
    with open(args_path) as f:
        args = json.load(f)
    sys.path.insert(0, code)
    os.chdir(work)
    rec: dict[str, np.ndarray] = {}

    def put(k, v):
        rec[k] = v.detach().cpu().numpy() if torch.is_tensor(v) else np.asarray(v)

    import trimesh
    from model import detector, dinov2, sam, utils

    pts = np.load(args["points"]).astype(np.float64)
    trimesh.Trimesh.sample = lambda self, n, *a, **k: pts[:n].copy()
    inj = np.load(args["proposals"])

    load_sam = sam.load_sam  # ISM_sam.yaml says vit_h; --sam vit_b swaps the type only
    sam.load_sam = lambda model_type, checkpoint_dir: load_sam(args["sam_type"], checkpoint_dir)
    dino_init = dinov2.CustomDINOv2.__init__  # dinov2.yaml says dinov2_vitl14; --dino swaps the size

    def dino_init_as(self, *a, **k):
        k["model_name"] = args["dino"]
        dino_init(self, *a, **k)
    dinov2.CustomDINOv2.__init__ = dino_init_as
    gen = sam.CustomSamAutomaticMaskGenerator.generate_masks

    def generate_masks(self, image):
        if args.get("points_per_side"):
            from segment_anything.utils.amg import build_all_layer_point_grids
            self.point_grids = build_all_layer_point_grids(args["points_per_side"], 0, 1)
        self.stability_score_thresh = args["stability_score_thresh"]
        self.pred_iou_thresh = args["pred_iou_thresh"]
        dev = self.predictor.model.device  # SAM-6D moves nothing itself after this point
        try:
            out = gen(self, image)
        except RuntimeError as e:  # its _generate_masks ends with torch.stack(list of kept masks)
            if "non-empty" not in str(e):
                raise
            print("SAM-6D's generator kept no mask at these thresholds (its code then fails on "
                  "torch.stack of an empty list): recorded as 0 proposals", flush=True)
            h, w = image.shape[:2]
            out = {"masks": torch.zeros((0, h, w)), "boxes": torch.zeros((0, 4))}
        put("sam_masks", out["masks"] > 0.5)
        put("sam_masks_float", out["masks"])
        put("sam_boxes", out["boxes"])
        return {"masks": torch.from_numpy(inj["masks"]).float().to(dev),
                "boxes": torch.from_numpy(inj["boxes"]).to(dev)}

    sam.CustomSamAutomaticMaskGenerator.generate_masks = generate_masks

    def wrap(cls, name, fn):
        orig = getattr(cls, name)

        def w(self, *a, **k):
            out = orig(self, *a, **k)
            fn(self, a, out)
            return out
        setattr(cls, name, w)

    wrap(dinov2.CustomDINOv2, "compute_features", lambda s, a, o: put("tpl_global", o))
    wrap(dinov2.CustomDINOv2, "compute_masked_patch_feature", lambda s, a, o: put("tpl_patches", o))

    def fwd(s, a, o):
        put("query_global", o[0])
        put("query_patches", o[1])
    wrap(dinov2.CustomDINOv2, "forward", fwd)
    M = detector.Instance_Segmentation_Model

    def sem(s, a, o):
        for k, v in zip(("sel_idx", "obj_idx", "semantic", "best_template"), o, strict=True):
            put(k, v)
        put("sims", s.matching_config.metric(a[0], s.ref_data["descriptors"])[:, 0])
    wrap(M, "compute_semantic_score", sem)
    semantic = M.compute_semantic_score

    def compute_semantic_score(self, *a, **k):  # ISM_sam.yaml's matching_config.confidence_thresh
        self.matching_config.confidence_thresh = args.get("confidence_thresh", 0.2)
        return semantic(self, *a, **k)
    M.compute_semantic_score = compute_semantic_score
    wrap(M, "compute_appearance_score", lambda s, a, o: put("appearance", o[0]))
    wrap(M, "project_template_to_image", lambda s, a, o: put("image_uv", o))

    def geo(s, a, o):
        put("geometric", o[0] if torch.is_tensor(o[0]) else torch.full_like(o[1], float(o[0])))
        put("visible", o[1])
    wrap(M, "compute_geometric_score", geo)
    add = utils.Detections.add_attribute

    def add_attribute(self, key, value):
        add(self, key, value)
        if key == "scores":
            put("final", value)
        if key == "object_ids":
            d = copy.deepcopy(self)
            d.boxes = d.boxes.clone()
            all_idx = torch.arange(len(d.boxes))
            d.add_attribute("idx", all_idx)
            d.apply_nms_per_object_id(nms_thresh=0.25)
            put("nms_keep", d.idx)
    utils.Detections.add_attribute = add_attribute

    sys.argv = ["run_inference_custom.py", "--segmentor_model", "sam", "--output_dir", work,
                "--cad_path", args["cad"], "--rgb_path", args["rgb"], "--depth_path", args["depth"],
                "--cam_path", args["cam"], "--stability_score_thresh", str(args["stability_score_thresh"])]
    try:
        runpy.run_path(os.path.join(code, "run_inference_custom.py"), run_name="__main__")
    except UnboundLocalError as e:  # its visualize() draws the best detection of score > 0 and has
        if "best_det" not in str(e) or "nms_keep" not in rec:  # none when no score is positive
            raise
        print("SAM-6D's visualize() found no detection with a score > 0 (random weights); everything "
              "before it ran and is recorded", flush=True)
    finally:  # what was recorded before a failure is still worth comparing
        np.savez_compressed(os.path.join(work, "official.npz" if "final" in rec else "official_partial.npz"),
                            **rec)


if __name__ == "__main__":
    _standin_torchvision()
    _standin_lightning()
    torch.set_num_threads(int(os.environ.get("PARITY_THREADS", "2")))
    torch.backends.cuda.matmul.allow_tf32 = False  # full fp32, as parity_ism.py sets for segloop
    torch.backends.cudnn.allow_tf32 = False
    if sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6])
    else:
        run(sys.argv[2], sys.argv[3], sys.argv[4])
