"""The ``medsam`` engine: SAM v1 name mapping (real ViT-B layout), import and conversion,
MedSAM's preprocessing rules, propagation by neighbour boxes, CLI on a PNG and a NIfTI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from segloop.engines.medsam.preprocess import box_of_mask, image_to_model_input, scale_box
from segloop.engines.medsam.session import MedSAMSession, PropagationRule
from segloop.engines.medsam.testing import install_tiny_medsam, save_medsam_checkpoint
from segloop.engines.sam2.preprocess import to_uint8_volume
from segloop.io.volume import Volume
from segloop.models.sam_v1 import (
    build_sam_model,
    load_sam_model,
    sam_hf_to_original,
    sam_original_to_hf,
    sam_vit_b_config,
    tiny_sam_config,
)
from segloop.models.store import import_model
from segloop.types import Prompts

FIXTURES = Path(__file__).resolve().parents[3] / ".." / "shared" / "fixtures"
FIXTURE = FIXTURES / "sam_vit_b_state_dict_keys.json"


def test_real_vit_b_layout_loads_strictly_on_meta() -> None:
    if not FIXTURE.is_file():
        pytest.skip(f"fixture not found: {FIXTURE}")
    from transformers import SamConfig, SamModel

    shapes = json.loads(FIXTURE.read_text(encoding="utf-8"))
    assert len(shapes) == 314
    with torch.device("meta"):
        orig = {k: torch.empty(v) for k, v in shapes.items()}
        model = SamModel(SamConfig(**sam_vit_b_config()))
    hf = sam_original_to_hf(orig)
    assert len(hf) == 315  # the Gaussian matrix serves the prompt encoder and the image PE
    model.load_state_dict(hf, strict=True, assign=True)  # raises on any missing/extra/shape
    back = sam_hf_to_original(hf)
    assert {k: list(v.shape) for k, v in back.items()} == shapes


def test_import_original_layout_and_outputs_match_the_source_model(tmp_path: Path) -> None:
    torch.manual_seed(1)
    src = build_sam_model(tiny_sam_config(64))
    ck = save_medsam_checkpoint(src, tmp_path / "medsam_vit_b.pth")
    assert "image_encoder.blocks.0.norm1.weight" in torch.load(ck, weights_only=True)
    import_model(ck, "medsam", config=tiny_sam_config(64))
    loaded = load_sam_model("medsam")
    x = torch.rand(1, 3, 64, 64)
    box = torch.tensor([[[5.0, 8.0, 40.0, 50.0]]])
    with torch.inference_mode():
        a = src(pixel_values=x, input_boxes=box, multimask_output=False).pred_masks
        b = loaded(pixel_values=x, input_boxes=box, multimask_output=False).pred_masks
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # a checkpoint in transformers names (HF medsam-vit-base) imports too
    torch.save(src.state_dict(), tmp_path / "pytorch_model.bin")
    import_model(tmp_path / "pytorch_model.bin", "medsam-vit-base", config=tiny_sam_config(64))
    with torch.inference_mode():
        c = load_sam_model("medsam-vit-base")(pixel_values=x, input_boxes=box,
                                              multimask_output=False).pred_masks
    torch.testing.assert_close(a, c, rtol=0, atol=0)


def test_preprocessing_follows_medsam() -> None:
    img = np.zeros((30, 40), np.uint8)
    img[10:20, 5:15] = 200
    x = image_to_model_input(img, 64)
    assert x.shape == (3, 64, 64) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0 and np.array_equal(x[0], x[2])  # grey -> 3 equal channels
    rgb = np.dstack([img, img // 2, 255 - img])
    y = image_to_model_input(rgb, 64)
    assert not np.array_equal(y[0], y[2])  # colour stays colour
    np.testing.assert_allclose(scale_box((4, 6, 39, 29), 30, 40, 1024), [102.4, 204.8, 998.4, 989.866667],
                               rtol=1e-6)
    m = np.zeros((10, 12), bool)
    m[3:5, 4:9] = True
    assert box_of_mask(m, 2) == (2, 1, 10, 6) and box_of_mask(np.zeros((3, 3), bool), 1) is None


class ShrinkingModel:
    """A stand-in model whose mask is its box shrunk by 2 px (a target that tapers): it
    isolates the propagation rule (box from the neighbour, margin, stop) from model quality."""

    image_size = 64

    def __init__(self) -> None:
        self.boxes: list[tuple[int, int, tuple[int, int, int, int] | None]] = []

    def encode(self, pixels: np.ndarray) -> tuple[int, int]:
        return pixels.shape[0], pixels.shape[1]

    def predict(self, emb: tuple[int, int], prompts: Prompts) -> np.ndarray:
        self.boxes.append((emb[0], emb[1], prompts.box))
        m = np.zeros(emb, bool)
        assert prompts.box is not None
        x0, y0, x1, y1 = prompts.box
        m[y0 + 2 : y1 - 1, x0 + 2 : x1 - 1] = True
        return m


def test_propagation_takes_each_box_from_the_neighbour_and_stops() -> None:
    vol = Volume(data=np.random.default_rng(0).normal(size=(40, 30, 9)).astype(np.float32),
                 affine=np.eye(4), source_format="test")
    fake = ShrinkingModel()
    s = MedSAMSession(fake, vol, rule=PropagationRule(margin=1, min_area=100))  # type: ignore[arg-type]
    key = s.segment_slice(4, Prompts(box=(10, 5, 30, 25)))
    assert key.shape == (40, 30) and key[12, 7] and not key[11, 7]  # x along axis 0
    res = list(s.propagate(4))
    assert [r.z for r in res] == [5, 6, 7, 8, 3, 2, 1, 0] and res[-1].done == res[-1].total == 8
    # slice 5 is prompted with slice 4's mask box (x 12..28, y 7..23) grown by the 1 px margin,
    # (11, 6, 29, 24), which the model gets in the radiological view: (39-29, 29-24, 39-11, 29-6)
    assert fake.boxes[1][2] == (10, 5, 28, 23)
    areas = [int(s.mask()[:, :, z].sum()) for z in range(9)]
    assert areas[4] > areas[5] > areas[6] > 0 and areas[3] == areas[5]
    assert areas[7] == 121 and areas[8] == 0 and areas[0] == 0  # 81 px < min_area: it ended


def test_the_model_sees_an_lps_stored_slice_as_stored() -> None:
    """MedSAM's users read LPS-stored CT as stored: that is the radiological view segloop feeds,
    whatever the storage (a RAS-stored copy gives the same model input)."""
    rng = np.random.default_rng(1)
    stored = rng.normal(40, 40, (40, 30, 3)).astype(np.float32)  # inside the CT window
    lps = Volume(data=stored, affine=np.diag([-1.0, -1.0, 1.0, 1.0]), source_format="test",
                 modality="CT")
    s = MedSAMSession(ShrinkingModel(), lps, rule=PropagationRule())  # type: ignore[arg-type]
    scaled = to_uint8_volume(stored[::-1, ::-1], "CT", "auto")  # canonical = flipped x, y
    assert np.array_equal(s._slices, scaled)
    ras = Volume(data=np.ascontiguousarray(stored[::-1, ::-1]), affine=np.eye(4),
                 source_format="test", modality="CT")
    s2 = MedSAMSession(ShrinkingModel(), ras, rule=PropagationRule())  # type: ignore[arg-type]
    assert np.array_equal(s2._slices, s._slices)
    # as stored: rows = the stored j axis, columns = i (within the uint8 scaling)
    grey = s._slices[1].astype(float)
    assert np.corrcoef(grey.ravel(), stored[:, :, 1].T.ravel())[0, 1] > 0.99


def run_cli(*args: object) -> int:
    """The ``segloop`` command in this process (the same parser and handlers as the console
    script, without three more torch imports)."""
    from segloop.cli import main
    from segloop.engines.registry import clear_engines

    try:
        return main([str(a) for a in args])
    finally:
        clear_engines()  # the engine cache must not outlive this test's SEGLOOP_HOME


def test_cli_import_and_segment_png_and_nifti(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ck = save_medsam_checkpoint(build_sam_model(tiny_sam_config(64)), tmp_path / "medsam_vit_b.pth")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(tiny_sam_config(64)))
    assert run_cli("models", "import", ck, "--as", "medsam", "--config", cfg, "--convert") == 0
    rgb = np.random.default_rng(0).integers(0, 255, (50, 70, 3), np.uint8)
    Image.fromarray(rgb).save(tmp_path / "p.png")
    assert run_cli("segment", tmp_path / "p.png", "--box", 10, 10, 40, 30, "-o", tmp_path / "m.png",
                   "--engine", "medsam", "-q") == 0
    m = np.asarray(Image.open(tmp_path / "m.png"))
    assert m.shape == (50, 70) and set(np.unique(m)) <= {0, 255}
    nii = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(1).normal(size=(24, 20, 5)).astype(np.float32),
                             np.diag([-1.0, -1.0, 2.0, 1.0])), nii)
    assert run_cli("segment", nii, "--box", 4, 4, 15, 12, "--slice", 2, "-o", tmp_path / "v_m.nii.gz",
                   "--engine", "medsam", "-q") == 0
    assert nib.load(tmp_path / "v_m.nii.gz").shape == (24, 20, 5)


def test_install_tiny_is_what_the_contract_uses() -> None:
    d = install_tiny_medsam("medsam")
    assert (d / "checkpoint.pt").is_file()


def test_sam21_segments_a_2d_image_through_the_image_predictor() -> None:
    """SAM 2.1 (tiny random weights) on a 2D RGB image: the image model loads strictly from the
    video checkpoint, a box and a single point give masks of the image's size, and a single
    point takes the candidate with the highest predicted IoU."""
    from segloop.engines import get_engine
    from segloop.engines.image2d import segment_image
    from segloop.engines.sam2.image2d import Sam2ImagePredictor
    from segloop.engines.sam2.testing import install_tiny_weights
    from segloop.io.image2d import Image2D, ImageSource

    install_tiny_weights("sam2.1-tiny")
    rgb = np.random.default_rng(0).integers(0, 255, (45, 70, 3), np.uint8)
    image = Image2D(pixels=rgb, source=ImageSource.PNG)
    engine = get_engine("sam2.1-tiny")
    for prompts in (Prompts(box=(5, 5, 40, 30)), Prompts.make(points=[(20, 10)], labels=[1])):
        assert segment_image(engine, image, prompts).shape == (45, 70)
    pred = Sam2ImagePredictor.load("sam2.1-tiny")
    emb = pred.encode(rgb)
    one = Prompts.make(points=[(20, 10)], labels=[1])
    with torch.inference_mode():
        out = pred.model(image_embeddings=emb.features, multimask_output=True,
                         input_points=torch.tensor([[[[20 * 64 / 70, 10 * 64 / 45]]]]),
                         input_labels=torch.tensor([[[1]]], dtype=torch.int32))
    mask, score = pred.predict(emb, one)
    assert score == pytest.approx(float(out.iou_scores[0, 0].max()))
    assert mask.shape == (45, 70) and mask.dtype == np.bool_


def test_train_medsam_on_npy_and_serve_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``segloop train --model medsam --npy-dir``: the loss falls on a learnable task, the
    checkpoint is in MedSAM's own layout, and ``medsam@RUN`` segments through the registry."""
    from segloop.engines.registry import clear_engines, get_engine
    from segloop.train.medsam_train import dice_bce_loss

    install_tiny_medsam("medsam", image_size=64)
    npy = tmp_path / "npy"
    (npy / "imgs").mkdir(parents=True)
    (npy / "gts").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        gt = np.zeros((64, 64), np.uint8)
        y, x = 10 + 6 * i, 12 + 5 * i
        gt[y : y + 20, x : x + 24] = 1
        img = np.repeat((0.2 + 0.6 * gt + rng.normal(0, 0.05, gt.shape))[:, :, None], 3, axis=-1)
        np.save(npy / "imgs" / f"c-{i:03d}.npy", np.clip(img, 0, 1))
        np.save(npy / "gts" / f"c-{i:03d}.npy", gt)
    out = tmp_path / "run1"
    rc = run_cli("train", "--model", "medsam", "--npy-dir", npy, "--epochs", 6, "--batch-size", 2,
                 "--lr", "1e-2", "--out", out, "--threads", 1, "-q")
    assert rc == 0
    losses = [float(v) for v in capsys.readouterr().out.split("losses ")[1].split()[:6]]
    assert min(losses[3:]) < 0.9 * losses[0], losses  # random tiny weights learn slowly
    ck = torch.load(out / "medsam_model_best.pth", weights_only=True)
    assert "image_encoder.blocks.0.norm1.weight" in ck["model"]
    latest = torch.load(out / "medsam_model_latest.pth", weights_only=True)
    assert latest["epoch"] == 5
    try:
        engine = get_engine("medsam@run1")
        mask = engine.segment_image(np.zeros((64, 64), np.uint8) + 50, Prompts(box=(10, 10, 40, 40)))
        assert mask.shape == (64, 64)
    finally:
        clear_engines()
    # the loss is MedSAM's: a perfect, confident prediction scores ~0, its opposite ~2+
    t = torch.zeros(1, 1, 8, 8)
    t[..., 2:6, 2:6] = 1
    assert float(dice_bce_loss((t * 2 - 1) * 20, t)) < 0.01 < 2 < float(dice_bce_loss((1 - 2 * t) * 20, t))


def test_scored_segmentation_gives_the_iou_head_and_a_2d_session_encodes_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``--compare-with`` shows each model's own predicted IoU: for ``medsam`` it is SAM's IoU
    head for that box (checked against a direct ``SamModel`` call), the mask is the plain
    one; ``classic`` has no score. A 2D job's session encodes its picture once."""
    from segloop.engines import get_engine
    from segloop.engines.image2d import segment_image, segment_image_scored
    from segloop.engines.image2d_session import Image2DSession
    from segloop.io.image2d import Image2D, ImageSource

    install_tiny_medsam("medsam", image_size=64)
    rgb = np.random.default_rng(2).integers(0, 255, (48, 64, 3), np.uint8)
    image = Image2D(pixels=rgb, source=ImageSource.PNG)
    engine = get_engine("medsam")
    box = Prompts(box=(8, 6, 40, 30))
    mask, score = segment_image_scored(engine, image, box)
    np.testing.assert_array_equal(mask, segment_image(engine, image, box))
    pred = engine.predictor()
    emb = pred.encode(rgb)
    with torch.inference_mode():
        out = pred.model(image_embeddings=emb.features, multimask_output=False,
                         input_boxes=torch.as_tensor(np.asarray([[scale_box(box.box, 48, 64, 64)]]),
                                                  dtype=torch.float32))
    assert score == pytest.approx(float(out.iou_scores[0, 0, 0]), abs=1e-6)
    assert segment_image_scored(get_engine("classic"), image, box)[1] is None

    calls: list[int] = []
    real = type(pred).encode
    monkeypatch.setattr(type(pred), "encode", lambda self, px: calls.append(1) or real(self, px))
    session = Image2DSession(engine, image)
    first = session.segment_slice(0, box)
    assert first.shape == (64, 48)  # (X = width, Y = height)
    list(session.refine(0, Prompts.make(points=[(20, 20)], labels=[0])))
    list(session.refine(0, Prompts(box=(4, 4, 50, 40))))
    assert len(calls) == 1
    assert session.mask().shape == (64, 48, 1)


def _npy_cases(root: Path, cases: int, slices: int) -> Path:
    """MedSAM's npy layout: ``<case>-<zzz>.npy`` slices with one bright rectangle each."""
    (root / "imgs").mkdir(parents=True)
    (root / "gts").mkdir()
    rng = np.random.default_rng(0)
    for c in range(cases):
        for z in range(slices):
            gt = np.zeros((64, 64), np.uint8)
            y, x = 8 + 5 * z + 3 * c, 10 + 4 * z
            gt[y: y + 22, x: x + 26] = 1
            img = np.repeat((0.2 + 0.6 * gt + rng.normal(0, 0.05, gt.shape))[:, :, None], 3, -1)
            np.save(root / "imgs" / f"case{c}-{z:03d}.npy", np.clip(img, 0, 1))
            np.save(root / "gts" / f"case{c}-{z:03d}.npy", gt)
    return root


def test_medsam_training_validates_per_epoch_keeps_the_best_and_resumes_exactly(
        tmp_path: Path) -> None:
    """Whole cases are held out; each epoch's validation Dice is recorded and the best
    checkpoint is the epoch with the highest; 2 epochs + ``resume`` to 4 give the same weights
    and history as 4 epochs in one go."""
    from segloop.models.sam_v1 import sam_original_to_hf
    from segloop.train.medsam_train import MedSAMTrainConfig, split_cases, train_medsam

    npy = _npy_cases(tmp_path / "npy", cases=3, slices=2)
    from segloop.train.medsam_train import npy_pairs

    train, val, held = split_cases(npy_pairs(npy), 0.34, seed=0)
    assert len(held) == 1 and len(val) == 2 and len(train) == 4
    assert all(p[1].name.startswith(held[0] + "-") for p in val)

    def model() -> Any:
        torch.manual_seed(0)
        return build_sam_model(tiny_sam_config(64))

    def cfg(out: Path, epochs: int, resume: bool = False) -> MedSAMTrainConfig:
        return MedSAMTrainConfig(npy_dir=npy, out=out, epochs=epochs, batch_size=2, lr=1e-2,
                                 threads=1, val_fraction=0.34, resume=resume)

    full = train_medsam(cfg(tmp_path / "full", 4), model())
    assert len(full.val_dice) == 4 and full.val_cases == held
    assert all(0.0 <= d <= 1.0 for d in full.val_dice)
    best = torch.load(tmp_path / "full" / "medsam_model_best.pth", weights_only=True)
    assert best["epoch"] == int(np.argmax(full.val_dice))
    latest = torch.load(tmp_path / "full" / "medsam_model_latest.pth", weights_only=True)
    assert latest["epoch"] == 3 and "optimizer" in latest  # as train_one_gpu.py saves it

    train_medsam(cfg(tmp_path / "half", 2), model())
    resumed = train_medsam(cfg(tmp_path / "half", 4, resume=True), model())
    assert resumed.losses == pytest.approx(full.losses, rel=1e-4)
    assert resumed.val_dice == pytest.approx(full.val_dice, abs=1e-4)
    a = sam_original_to_hf(torch.load(tmp_path / "half" / "medsam_model_latest.pth",
                                      weights_only=True)["model"])
    b = sam_original_to_hf(latest["model"])
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4
    with pytest.raises(Exception, match="does not exist"):
        train_medsam(cfg(tmp_path / "nothing", 2, resume=True), model())
