"""The ``sam`` backend on tiny random-weight SAM / DINOv2 checkpoints generated here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from segloop.errors import ModelNotAvailableError  # noqa: E402
from segloop.ism.pipeline import IsmPipeline  # noqa: E402
from segloop.ism.sam_backend import (  # noqa: E402
    AmgConfig,
    find_weights,
    load_backend,
    point_grid,
    stability_score,
)
from segloop.ism.types import BackendName, Scene  # noqa: E402
from segloop.models import store  # noqa: E402
from segloop.models.registry import get_spec  # noqa: E402

from .conftest import box_mesh, synthetic_scene, write_ply  # noqa: E402


def _tiny(root: Path) -> Path:
    """Save tiny random SAM and DINOv2 models as transformers folders under root/<registry name>."""
    torch.manual_seed(0)
    sam = transformers.SamModel(transformers.SamConfig(vision_config={
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "global_attn_indexes": [1],
        "mlp_dim": 64, "output_channels": 256}))
    dino = transformers.Dinov2Model(transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=14,
        image_size=224))
    sam.save_pretrained(root / "sam-vit-h")
    dino.save_pretrained(root / "dinov2-vitl14")
    return root


def test_registry_entries() -> None:
    assert get_spec("sam-vit-h").hf_repo == "facebook/sam-vit-huge"
    assert get_spec("sam-vit-b").hf_repo == "facebook/sam-vit-base"
    spec = get_spec("dinov2-vitl14")
    assert spec.hf_repo == "facebook/dinov2-large" and spec.config["patch_size"] == 14
    assert spec.file_format == "transformers" and spec.engine == "ism"
    assert get_spec("sam-vit-h").sha256 == "edfb0462392541fca9af44ff039bfb32dbd0c939997f3abb77a26e23af7afd7c"
    assert get_spec("dinov2-vitl14").sha256 == (
        "399fba97a95f22c36834418bc69373364a99af3a1153da1c0fb31db567c92e23")
    vit_h = get_spec("sam-vit-h").config["vision_config"]
    assert (vit_h["hidden_size"], vit_h["num_hidden_layers"]) == (1280, 32)
    # exact bytes where a source states them (model.safetensors); none states ViT-H's
    assert (get_spec("sam-vit-b").size, get_spec("dinov2-vitl14").size) == (374979480, 1217522888)
    assert get_spec("sam-vit-h").size is None


def test_point_grid_and_stability_score() -> None:
    g = point_grid(2)
    assert np.allclose(g, [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    logits = torch.tensor([[[2.0, 2.0, 0.5, -2.0]], [[2.0, 2.0, 2.0, 2.0]]])
    # mask 0: 2 pixels > 1, 3 pixels > -1 → 2/3; mask 1: stable → 1
    assert torch.allclose(stability_score(logits), torch.tensor([2 / 3, 1.0]))


def test_missing_weights_message(tmp_path: Path) -> None:
    with pytest.raises(ModelNotAvailableError, match="segloop models import FOLDER --as sam-vit-h"):
        find_weights("sam-vit-h", tmp_path)


def test_load_and_describe_templates(tmp_path: Path) -> None:
    from segloop.ism.types import Templates

    backend = load_backend(_tiny(tmp_path / "ck"))
    masks = np.zeros((2, 64, 64), dtype=bool)
    masks[0, 10:40, 10:30] = True
    masks[1, 5:60, 20:50] = True
    rgb = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3)).astype(np.uint8)
    d = backend.describe_templates(Templates(rgb, masks, np.stack([np.eye(3)] * 2), np.zeros((4, 3)), "t"))
    assert d.global_.shape == (2, 32) and d.patches.shape == (2, 256, 32)
    assert np.count_nonzero(np.linalg.norm(d.patches[0], axis=-1)) > 0


@pytest.mark.slow  # > 20 s on a loaded 2-core CPU (SAM's 1024² embedding even with a tiny encoder)
def test_tiny_backend_proposals_and_descriptors(tmp_path: Path) -> None:
    ck = _tiny(tmp_path / "ck")
    backend = load_backend(ck, config=AmgConfig(points_per_side=2, pred_iou_thresh=-1.0))
    v, f = box_mesh((60.0, 40.0, 25.0))
    rgb, depth, K, _ = synthetic_scene(v, f, (30, 160, 220), view=27)
    scene = Scene(rgb=rgb, depth_mm=depth.astype(np.float32), K=K)
    props = backend.proposals(scene, stability_score_thresh=0.0)
    assert props.masks.shape[1:] == (480, 640) and props.masks.dtype == bool
    assert len(props) <= 4 * 3
    for m, b in zip(props.masks, props.boxes, strict=True):
        ys, xs = np.nonzero(m)
        assert b.tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]
    if len(props):
        d = backend.describe_proposals(scene, props)
        assert d.global_.shape == (len(props), 32) and d.patches.shape == (len(props), 256, 32)
        norms = np.linalg.norm(d.patches, axis=-1)
        assert np.all((np.abs(norms - 1) < 1e-4) | (norms == 0))


@pytest.mark.slow
def test_tiny_backend_in_the_pipeline(tmp_path: Path) -> None:
    backend = load_backend(_tiny(tmp_path / "ck"), config=AmgConfig(points_per_side=2, pred_iou_thresh=-1.0))
    v, f = box_mesh((60.0, 40.0, 25.0))
    rgb, depth, K, _ = synthetic_scene(v, f, (30, 160, 220), view=27)
    scene = Scene(rgb=rgb, depth_mm=depth.astype(np.float32), K=K)
    pipe = IsmPipeline()
    pipe.add_backend(BackendName.SAM, backend)
    cad = write_ply(tmp_path / "box.ply", v, f, colors=np.tile([[30, 160, 220]], (8, 1)))
    res = pipe.run(scene, BackendName.SAM, tmp_path / "tpl", cad, stability_score_thresh=0.0)
    assert all(0.0 <= det.score <= 1.0 for det in res.detections)


def test_weights_from_segloop_model_cache(tmp_path: Path) -> None:
    ck = _tiny(tmp_path / "ck")
    store.import_model(ck / "dinov2-vitl14", "dinov2-vitl14")
    assert find_weights("dinov2-vitl14", None) == store.hf_dir("dinov2-vitl14")
    with pytest.raises(ModelNotAvailableError):
        load_backend(None)  # SAM still missing
