"""The training loop on CPU with tiny random models: learning, resume, checkpoints, versions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from segloop.errors import InputError, SegloopError
from segloop.train.config import TrainConfig
from segloop.train.prepare import PreparedData
from segloop.train.records import ImageRecord
from segloop.train.trainer import Progress, load_checkpoint, train

from .synthetic import ball_volume, disc_records


def _cfg(tmp_path: Path, name: str, **kw: object) -> TrainConfig:
    base: dict[str, object] = {"out": str(tmp_path / name), "images": "unused", "masks": "unused",
                               "model": "tiny", "image_size": 64, "seed": 0,
                               "scheduler": "none"}
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.mark.slow  # a learning test: many optimiser steps (scripts/test.sh runs it in its own step)
def test_learns_discs_then_round_trips(tmp_path: Path) -> None:
    data = PreparedData(disc_records(10, seed=0), disc_records(4, seed=7, prefix="v"), False)
    cfg = _cfg(tmp_path, "discs", epochs=4, lr=2e-3)
    res = train(cfg, data=data)
    s, h = res.summary, res.history
    losses = res.step_losses
    assert len(losses) == 40 and len(h) == 4
    # the loss falls and the validation IoU rises
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert s["best"]["val_iou"] > s["before"]["val_iou"] + 0.3
    assert s["best"]["val_iou"] > 0.5

    run = res.run_dir
    for f in ("best.pt", "latest.pt", "config.json", "summary.json", "curves.png", "metrics.csv",
              "encoder.safetensors", "encoder_config.json", "model/config.json",
              "model/model.safetensors"):
        assert (run / f).is_file(), f
    assert (run / "tensorboard").is_dir() == ("tensorboard" in s["logging"])

    # checkpoint round trip: strict load, same weights as the export, resolved config stored
    model, ck = load_checkpoint(run / "best.pt")
    assert ck["config"]["model"] == "tiny" and ck["preprocessing"]["image_size"] == 64
    assert ck["epoch"] == s["best"]["epoch"]
    from safetensors.torch import load_file

    exported = load_file(str(run / "model" / "model.safetensors"))
    sd = model.state_dict()
    assert set(exported) == set(sd)
    assert all(torch.equal(exported[k], sd[k].float()) for k in sd)
    enc = load_file(str(run / "encoder.safetensors"))
    assert enc and all(k.startswith("vision_encoder.") for k in enc)

    # the image encoder is frozen by default: equal to the seeded random start
    from segloop.models.configs import tiny_config
    from segloop.models.loader import build_model

    torch.manual_seed(0)
    start = build_model(tiny_config(64)).state_dict()
    assert all(torch.equal(start[k], sd[k]) for k in sd if k.startswith("vision_encoder."))
    assert not all(torch.equal(start[k], sd[k]) for k in sd if k.startswith("mask_decoder."))

    # the run is a registered model version, found again by a fresh registry scan
    name = res.model_name
    assert name == "medsam2@discs"
    from segloop.models.registry import get_spec, unregister_model
    from segloop.models.versions import register_saved_runs, resolve_model_version

    unregister_model(name)
    assert name in register_saved_runs()
    spec = get_spec(name)
    assert spec.engine == "medsam2" and spec.extra["base_model"] == "tiny"
    assert spec.extra["val_scores"]["val_iou"] == pytest.approx(s["best"]["val_iou"])
    assert resolve_model_version(name) == ("medsam2", name)
    with pytest.raises(SegloopError, match="no trained model"):
        resolve_model_version("medsam2@nope")

    # ...and the medsam2 engine runs it
    from segloop.engines.sam2.engine import MedSAM2Engine
    from segloop.io.volume import Volume
    from segloop.types import Prompts

    rng = np.random.default_rng(3)
    vol_data, lab = ball_volume(rng)
    engine = MedSAM2Engine(model=name, device="cpu")
    session = engine.open(Volume(data=vol_data, affine=np.eye(4), source_format="nifti",
                                 modality="MR"))
    xs, ys = np.nonzero(lab[:, :, 4])
    mask = session.segment_slice(4, Prompts.make(box=[int(xs.min()), int(ys.min()),
                                                      int(xs.max()), int(ys.max())]))
    assert mask.shape == (48, 48)

    # the run is reachable by name everywhere engines are named (segment, eval, the server),
    # also from a process that has not scanned the cache yet
    unregister_model(name)
    from segloop.engines.registry import get_engine
    from segloop.eval.runner import resolve_engines

    by_name = get_engine(name, device="cpu")
    assert isinstance(by_name, MedSAM2Engine) and by_name.model_name == name
    assert list(resolve_engines([name])) == [name]

    bad = tmp_path / "bad.pt"
    torch.save({"model": {}}, bad)
    with pytest.raises(SegloopError, match="not a segloop training checkpoint"):
        load_checkpoint(bad)


def _volume_records(n: int) -> list[ImageRecord]:
    from segloop.engines.sam2.preprocess import to_uint8_volume
    from segloop.io.radiological import volume_to_views

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img, lab = ball_volume(rng)
        # frames and truth in the same (radiological) view, as load_manifest_records makes them
        out.append(ImageRecord(f"v{i}", f"p{i}", to_uint8_volume(img, "MR"),
                               volume_to_views(lab.astype(bool))))
    return out


class _Stop(Exception):
    pass


@pytest.mark.slow  # a learning test: many optimiser steps (scripts/test.sh runs it in its own step)
def test_resume_continues_identically(tmp_path: Path) -> None:
    recs = _volume_records(3)
    data = PreparedData(recs[:2], recs[2:], False)
    kw: dict[str, object] = {"manifest": "unused", "images": None, "masks": None, "epochs": 2,
                             "samples_per_epoch": 3, "val_samples": 1, "accumulate": 2,
                             "clip_length": 3, "scheduler": "cosine", "lr": 1e-3,
                             "register": False}
    full = train(_cfg(tmp_path, "full", **kw), data=data)
    assert full.summary["parts"] == ["mask-decoder", "prompt-encoder", "memory"]

    def stop_after_first(p: Progress) -> None:
        if p.phase == "epoch" and p.epoch == 1:
            raise _Stop

    cfg = _cfg(tmp_path, "cut", **kw)
    with pytest.raises(_Stop):
        train(cfg, data=data, on_progress=stop_after_first)
    assert (tmp_path / "cut" / "latest.pt").is_file() and not (tmp_path / "cut" / "summary.json").exists()
    with pytest.raises(InputError, match="seed: 0 -> 1"):
        train(_cfg(tmp_path, "cut", **{**kw, "seed": 1}), data=data, resume=True)
    resumed = train(_cfg(tmp_path, "cut", **kw), data=data, resume=True)

    assert len(resumed.step_losses) == len(full.step_losses) == 6
    assert resumed.step_losses == full.step_losses
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in full.history]
    a = torch.load(tmp_path / "full" / "latest.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "latest.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["step"] == b["step"] == 4  # ceil(3 / 2) optimiser steps per epoch


def test_precision_checkpointing_and_all_parts_run(tmp_path: Path) -> None:
    data = PreparedData(disc_records(2), disc_records(1, seed=9, prefix="v"), False)
    cfg = _cfg(tmp_path, "bf16", epochs=1, precision="bf16", grad_checkpointing=True,
               parts=["mask-decoder", "prompt-encoder", "memory", "image-encoder"],
               register=False)
    res = train(cfg, data=data)
    assert res.summary["precision"] == "torch.bfloat16"
    assert all(np.isfinite(res.step_losses))
    model, _ = load_checkpoint(tmp_path / "bf16" / "best.pt")
    torch.manual_seed(0)
    from segloop.models.configs import tiny_config
    from segloop.models.loader import build_model

    start = build_model(tiny_config(64)).state_dict()
    sd = model.state_dict()
    assert not all(torch.equal(start[k], sd[k]) for k in sd if k.startswith("vision_encoder."))


@pytest.mark.slow  # a learning test: many optimiser steps (scripts/test.sh runs it in its own step)
def test_3d_clips_learn_through_the_memory_path(tmp_path: Path) -> None:
    recs = _volume_records(8)
    cfg = _cfg(tmp_path, "balls", manifest="unused", images=None, masks=None, epochs=3,
               samples_per_epoch=16, lr=2e-3, clip_length=3, register=False)
    res = train(cfg, data=PreparedData(recs[:6], recs[6:], False))
    s = res.summary
    assert s["parts"] == ["mask-decoder", "prompt-encoder", "memory"]
    # validation clips: the largest slice prompted, then two slices tracked from memory
    assert s["best"]["val_iou"] > s["before"]["val_iou"] + 0.4
    model, _ = load_checkpoint(tmp_path / "balls" / "best.pt")
    from segloop.models.configs import tiny_config
    from segloop.models.loader import build_model

    torch.manual_seed(0)
    start = build_model(tiny_config(64)).state_dict()
    sd = model.state_dict()
    for prefix in ("memory_attention.", "memory_encoder.", "object_pointer_proj."):
        assert not all(torch.equal(start[k], sd[k]) for k in sd if k.startswith(prefix)), prefix
