"""SAM-6D's scores on hand-computed cases, and the classic backend end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segloop.errors import InputError
from segloop.ism.mesh import read_ply
from segloop.ism.pipeline import IsmPipeline
from segloop.ism.scoring import ScoreConfig, Scores, box_iou, nms, projected_boxes, score_proposals
from segloop.ism.types import BackendName, Descriptors, Proposals, Scene, Templates

from .conftest import box_mesh, synthetic_scene, write_ply


def test_box_iou_and_nms_hand_computed() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], dtype=float)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], dtype=float)
    assert np.allclose(box_iou(a, b), [50 / 150, 0.0, 1.0])  # per pair, not SAM-6D's all-or-nothing
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], dtype=float)
    assert nms(boxes, np.array([0.5, 0.9, 0.7]), 0.25).tolist() == [1, 2]


def test_final_score_formula() -> None:
    s = Scores(index=np.array([0]), semantic=np.array([0.6]), appearance=np.array([0.8]),
               geometric=np.array([0.5]), visible_ratio=np.array([0.5]), template=np.array([0]))
    assert s.final[0] == pytest.approx((0.6 + 0.8 + 0.25) / 2.5)


def test_geometric_box_hand_computed() -> None:
    K = np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    depth = np.zeros((80, 100), dtype=np.float32)
    mask = np.zeros((80, 100), dtype=bool)
    mask[40, 50] = True
    depth[40, 50] = 1000.0  # the mask's mean point: (0, 0, 1000) mm
    scene = Scene(rgb=np.zeros((80, 100, 3), np.uint8), depth_mm=depth, K=K)
    pts = np.array([[-100.0, -50, 0], [100, 50, 0]])
    box = projected_boxes(scene, Proposals(mask[None], np.array([[0.0, 0, 1, 1]])), np.eye(3)[None], pts)
    assert box[0].tolist() == [40.0, 35.0, 60.0, 45.0]  # 50 ± 100·100/1000, 40 ± 100·50/1000


def test_semantic_threshold_appearance_and_visibility() -> None:
    e = np.eye(4)
    ref = Descriptors(global_=np.stack([e[0], e[1]]), patches=np.stack([e[:2], e[2:]]))
    # proposal 0 matches template 1 exactly; proposal 1 matches nothing (semantic 0 <= 0.2)
    query = Descriptors(global_=np.stack([e[1], e[3] * 0 + np.array([0, 0, 0, 1.0])]),
                        patches=np.stack([np.stack([e[2], 0.3 * e[3] + np.sqrt(0.91) * e[0]]),
                                          np.stack([e[0], e[1]])]))
    masks = np.zeros((2, 10, 10), dtype=bool)
    masks[:, 2:5, 2:5] = True
    scene = Scene(rgb=np.zeros((10, 10, 3), np.uint8), depth_mm=np.full((10, 10), 500.0, np.float32),
                  K=np.array([[10.0, 0, 5], [0, 10.0, 5], [0, 0, 1]]))
    tpl = Templates(rgb=np.zeros((2, 4, 4, 3), np.uint8), masks=np.ones((2, 4, 4), bool),
                    rotations=np.stack([np.eye(3)] * 2), points=np.zeros((5, 3)), source="t")
    s = score_proposals(scene, Proposals(masks, np.array([[2.0, 2, 4, 4]] * 2)), query, ref, tpl,
                        ScoreConfig(top_k=1))
    assert s.index.tolist() == [0] and s.template.tolist() == [1]
    assert s.semantic[0] == pytest.approx(1.0)
    assert s.appearance[0] == pytest.approx((1.0 + 0.3) / 2, abs=1e-5)  # best match per query patch
    assert s.visible_ratio[0] == pytest.approx(0.5, abs=1e-5)  # one of two template patches > 0.5


def test_classic_finds_a_synthetic_box(tmp_path: Path) -> None:
    v, f = box_mesh((60.0, 40.0, 25.0))
    cad = write_ply(tmp_path / "box.ply", v, f, colors=np.tile([[30, 160, 220]], (8, 1)))
    rgb, depth, K, truth = synthetic_scene(v, f, (30, 160, 220), view=27)
    scene = Scene(rgb=rgb, depth_mm=depth.astype(np.float32), K=K)
    res = IsmPipeline().run(scene, BackendName.CLASSIC, tmp_path / "tpl", cad)
    assert (tmp_path / "tpl" / "xyz_41.npy").is_file()  # rendered on first use
    top = res.detections[0]
    assert (top.mask & truth).sum() / (top.mask | truth).sum() > 0.9
    assert 0.0 <= top.score <= 1.0 and top.geometric > 0.5


def test_template_folder_with_wrong_count(tmp_path: Path) -> None:
    v, f = box_mesh((10.0, 10.0, 10.0))
    cad = write_ply(tmp_path / "b.ply", v, f)
    tpl = tmp_path / "tpl"
    tpl.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tpl / "rgb_0.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tpl / "mask_0.png")
    np.save(tpl / "xyz_0.npy", np.zeros((4, 4, 3), np.float16))
    with pytest.raises(InputError, match="expected 42"):
        IsmPipeline().templates(tpl, cad)


def test_classic_on_the_example_scene(sam6d_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The watering can must be the top detection (the number quoted in docs/ism.md)."""
    cam = json.loads((sam6d_dir / "camera.json").read_text(encoding="utf-8"))
    depth = np.asarray(Image.open(sam6d_dir / "depth.png")).astype(np.float32) * cam["depth_scale"]
    scene = Scene(rgb=np.asarray(Image.open(sam6d_dir / "rgb.png").convert("RGB")), depth_mm=depth,
                  K=np.array(cam["cam_K"], dtype=float).reshape(3, 3))
    ref = np.asarray(Image.open(sam6d_dir / "ism_reference_mask.png")) > 0
    tpl = tmp_path_factory.mktemp("tpl")
    res = IsmPipeline().run(scene, BackendName.CLASSIC, tpl, sam6d_dir / "obj_000005.ply")
    ious = [(d.mask & ref).sum() / (d.mask | ref).sum() for d in res.detections]
    assert int(np.argmax(ious)) == 0 and ious[0] > 0.7
    assert read_ply(sam6d_dir / "obj_000005.ply").radius > 100
