"""The ``sam2`` ISM backend on a tiny random SAM 2.1 (imported into the model cache) + tiny DINOv2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from segloop.errors import ModelNotAvailableError  # noqa: E402
from segloop.ism.amg import AmgConfig  # noqa: E402
from segloop.ism.pipeline import IsmPipeline  # noqa: E402
from segloop.ism.types import BackendName, Scene  # noqa: E402

from .conftest import box_mesh, synthetic_scene, write_ply  # noqa: E402


def _tiny_dino(root: Path) -> Path:
    torch.manual_seed(0)
    transformers.Dinov2Model(transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=14,
        image_size=224)).save_pretrained(root / "dinov2-vitl14")
    return root


def test_fastsam_is_refused_with_the_reason() -> None:
    with pytest.raises(ModelNotAvailableError, match=r"ultralytics.*torchvision.*'sam2'"):
        IsmPipeline().backend(BackendName.FASTSAM)


def test_sam2_without_weights_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ModelNotAvailableError, match="classic"):
        IsmPipeline(checkpoints_dir=tmp_path, sam2_model="sam2.1-tiny").backend(BackendName.SAM2)


def _backend_and_scene(tmp_path: Path) -> tuple[object, Scene]:
    from segloop.engines.sam2.testing import install_tiny_weights
    from segloop.ism.sam2_backend import Sam2Backend, load_sam2_backend

    install_tiny_weights("sam2.1-tiny", image_size=64)
    loaded = load_sam2_backend(_tiny_dino(tmp_path / "ck"), "sam2.1-tiny")
    backend = Sam2Backend(loaded.predictor, loaded.describer.dino,
                          AmgConfig(points_per_side=2, pred_iou_thresh=-1e9, width=320))
    v, f = box_mesh((60.0, 40.0, 25.0))
    rgb, depth, K, _ = synthetic_scene(v, f, (30, 160, 220), view=27)
    return backend, Scene(rgb=rgb, depth_mm=depth.astype(np.float32), K=K)


def test_tiny_sam2_proposals(tmp_path: Path) -> None:
    backend, scene = _backend_and_scene(tmp_path)
    props = backend.proposals(scene, stability_score_thresh=0.0)  # type: ignore[attr-defined]
    assert props.masks.shape[1:] == (480, 640) and props.masks.dtype == bool
    assert 1 <= len(props) <= 4 * 3  # random weights: some mask survives with no filters
    for m, b in zip(props.masks, props.boxes, strict=True):
        ys, xs = np.nonzero(m)
        assert b.tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]


@pytest.mark.slow  # renders 42 templates and describes them: > 60 s on a loaded 2-core CPU
def test_tiny_sam2_in_the_pipeline(tmp_path: Path) -> None:
    backend, scene = _backend_and_scene(tmp_path)
    v, f = box_mesh((60.0, 40.0, 25.0))
    pipe = IsmPipeline()
    pipe.add_backend(BackendName.SAM2, backend)  # type: ignore[arg-type]
    cad = write_ply(tmp_path / "box.ply", v, f, colors=np.tile([[30, 160, 220]], (8, 1)))
    res = pipe.run(scene, BackendName.SAM2, tmp_path / "tpl", cad, stability_score_thresh=0.0)
    assert res.n_proposals >= 1
    assert all(0.0 <= det.score <= 1.0 for det in res.detections)
