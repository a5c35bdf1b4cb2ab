"""The ``sammed3d`` engine: checkpoint layout, 1.5 mm patch arithmetic, prompt mapping, tiling, CLI."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from segloop.engines.sammed3d.convert import (
    check_state_dict,
    load_model_file,
    load_official_file,
    official_to_ours,
    ours_to_official,
    save_official,
)
from segloop.engines.sammed3d.model import SamMed3D, SamMed3DConfig
from segloop.engines.sammed3d.preprocess import PatchGrid, znormalise
from segloop.engines.sammed3d.session import Click, Runtime, SamMed3DSession, prompts_to_clicks
from segloop.engines.sammed3d.testing import random_model
from segloop.errors import ModelNotAvailableError
from segloop.io.volume import Volume
from segloop.types import Prompts

FIXTURE = (Path(__file__).resolve().parents[3] / ".." / "shared" / "fixtures"
           / "sammed3d_vit_b_ori_state_dict_keys.json")
SEGLOOP = str(Path(sys.executable).with_name("segloop"))


def test_real_vit_b_layout_loads_strictly_on_meta() -> None:
    if not FIXTURE.is_file():
        pytest.skip(f"fixture not found: {FIXTURE}")
    names = json.loads(FIXTURE.read_text(encoding="utf-8"))
    assert len(names) == 324
    official = {k: torch.empty(v, device="meta") for k, v in names.items()}
    with torch.device("meta"):
        model = SamMed3D(SamMed3DConfig())
    ours = official_to_ours(official)
    check_state_dict(ours, model.state_dict(), "fixture")
    model.load_state_dict(ours, strict=True, assign=True)
    assert list(ours_to_official(ours)) == list(official)


def test_checkpoint_round_trip_and_strict_errors(tmp_path: Path) -> None:
    cfg = SamMed3DConfig.tiny()
    model = random_model(cfg, seed=3)
    path = save_official(model, tmp_path / "m.pth", epoch=4)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"model_state_dict", "epoch"}
    assert "prompt_encoder.point_embeddings.1.weight" in raw["model_state_dict"]
    loaded = load_model_file(path, cfg)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        e1, e2 = model.encode(x), loaded.encode(x)
    assert torch.equal(e1, e2)

    sd = dict(raw["model_state_dict"])
    sd.pop("mask_decoder.iou_token.weight")
    sd["image_encoder.pos_embed"] = torch.zeros(1, 2, 2, 2, 32)
    torch.save({"model_state_dict": sd}, tmp_path / "bad.pth")
    with pytest.raises(ModelNotAvailableError, match=r"1 missing: mask_decoder\.iou_token.*shape mismatch"):
        load_model_file(tmp_path / "bad.pth", cfg)
    with pytest.raises(ModelNotAvailableError, match=r"150 missing.*shape mismatch"):
        load_model_file(path, SamMed3DConfig())  # the tiny file is not a ViT-B
    sd = dict(raw["model_state_dict"], **{"extra.weight": torch.zeros(1)})
    torch.save(sd, tmp_path / "bare.pth")  # a bare state dict is accepted, extras are not
    with pytest.raises(ModelNotAvailableError, match=r"1 unexpected: extra\.weight"):
        load_model_file(tmp_path / "bare.pth", cfg)


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("code ran",))


def test_checkpoint_that_runs_code_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "evil.pth"
    with p.open("wb") as f:
        pickle.dump({"model_state_dict": _Evil()}, f)
    with pytest.raises(ModelNotAvailableError, match="weights_only=True"):
        load_official_file(p)


@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_patch_sampling_matches_simpleitk_resampling(dtype: str) -> None:
    sitk = pytest.importorskip("SimpleITK")
    rng = np.random.default_rng(0)
    shape, spacing = (21, 17, 9), (1.1, 0.8, 3.0)
    # int16 as CT files store HU: the official pipeline resamples in that type (truncating)
    vol = (rng.normal(size=shape) * (1 if dtype == "float32" else 300)).astype(dtype)
    # torchio's reference grid for a 1.5 mm resampling, in SimpleITK (axes x, y, z)
    img = sitk.GetImageFromArray(np.transpose(vol, (2, 1, 0)))
    img.SetSpacing(spacing)
    old = np.array(shape)
    new_size = np.floor(old * np.array(spacing) / 1.5).astype(int)
    last = np.array(img.TransformIndexToPhysicalPoint((old - 1).tolist()))
    centre = (last + np.array(img.GetOrigin())) / 2
    ref = sitk.Image(new_size.tolist(), img.GetPixelID())
    ref.SetSpacing((1.5, 1.5, 1.5))
    ref.SetOrigin((centre - (new_size - 1) / 2 * 1.5).tolist())
    res = sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear, 0.0)
    want = np.transpose(sitk.GetArrayFromImage(res), (2, 1, 0))

    grid = PatchGrid(shape, spacing, 1.5, 24, (-2, 0, -1))
    assert grid.resampled_shape == tuple(new_size)
    got = grid.sample(vol)
    m = new_size
    inner = got[2:2 + m[0], :m[1], 1:1 + m[2]]
    if dtype == "float32":
        np.testing.assert_allclose(inner, want, atol=1e-5)
    else:  # identical but for values within rounding error of an integer
        assert np.abs(inner - want).max() <= 1 and np.mean(inner == want) > 0.97
    assert not got[:2].any() and not got[2 + m[0]:].any() and not got[:, :, 0].any()


def test_paste_inverts_sampling_on_a_1p5mm_grid() -> None:
    shape = (20, 30, 10)
    mask = np.zeros(shape, dtype=bool)
    mask[5:12, 8:20, 2:7] = True
    grid = PatchGrid.around(shape, (1.5, 1.5, 1.5), (8, 14, 4), size=16)
    patch = grid.sample(mask.astype(np.float32)) > 0.5
    out = np.zeros(shape, dtype=bool)
    grid.paste(patch, out)
    cov = grid.covered()
    assert cov is not None
    assert np.array_equal(out[cov], mask[cov])
    assert grid.patch_points([[8, 14, 4]]).tolist() == [[8, 8, 8]]


def test_znormalise_uses_voxels_above_zero_and_unbiased_std() -> None:
    x = np.array([0.0, 0.0, 1.0, 2.0, 3.0, 6.0], dtype=np.float32).reshape(1, 2, 3)
    t = torch.from_numpy(x)
    vals = t[t > 0]
    want = (t - vals.mean()) / vals.std()
    np.testing.assert_allclose(znormalise(x), want.numpy(), rtol=1e-6)


def test_box_becomes_one_positive_click_at_its_centre() -> None:
    p = Prompts.make(box=(10, 20, 15, 31), points=[(3, 4)], labels=[0])
    assert prompts_to_clicks(7, p) == [Click(12, 25, 7, 1), Click(3, 4, 7, 0)]


def _all_foreground_model() -> SamMed3D:
    """A tiny model whose decoder says 'foreground' everywhere (deterministic tiling checks)."""
    model = random_model(SamMed3DConfig.tiny(), seed=1)
    with torch.no_grad():
        model.mask_decoder.up2.weight.zero_()
        model.mask_decoder.up2.bias.fill_(1.0)
        for mlp in model.mask_decoder.hyper:
            mlp.layers[-1].weight.zero_()
            mlp.layers[-1].bias.fill_(1.0)
    return model


@pytest.mark.parametrize("max_tiles", [1, 64])
def test_large_target_tiles_across_patches(max_tiles: int) -> None:
    import threading

    shape = (90, 40, 12)
    vol = Volume(data=np.random.default_rng(0).normal(100, 10, shape).astype(np.float32),
                 affine=np.diag([1.5, 1.5, 1.5, 1.0]), source_format="npz", modality="MR")
    rt = Runtime(model=_all_foreground_model(), device=torch.device("cpu"), use_bf16=False,
                 max_tiles=max_tiles, lock=threading.RLock())
    s = SamMed3DSession(rt, vol)
    s.segment_slice(6, Prompts.make(points=[(20, 20)], labels=[1]))
    for _ in s.propagate(6):
        pass
    m = s.mask(1)
    info = s.prediction_info(1)
    if max_tiles == 1:
        assert info["tiles"] == 1
        assert m[4:36, 4:36].all() and m.sum() == 32 * 32 * 12  # one 32³ patch around (20, 20)
    else:
        assert info["tiles"] > 1
        assert m.all(), "tiling must follow the object through the whole volume"


def test_cli_import_official_layout_and_segment(tmp_path: Path) -> None:
    cfg = SamMed3DConfig.tiny()
    ck = save_official(random_model(cfg, seed=2), tmp_path / "sam_med3d_tiny.pth")
    cfg_file = tmp_path / "tiny.json"
    cfg_file.write_text(json.dumps(cfg.to_dict()))

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SEGLOOP, *map(str, args)], capture_output=True, text=True, encoding="utf-8",
                              timeout=300)

    res = run("models", "import", ck, "--as", "sammed3d", "--convert")  # registry: ViT-B
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "not a SAM-Med3D checkpoint of this architecture (150 missing" in res.stderr
    res = run("models", "import", ck, "--as", "sammed3d", "--config", cfg_file, "--convert")
    assert res.returncode == 0, res.stderr
    shape = (30, 26, 10)
    affine = np.diag([-1.2, -1.2, 3.0, 1.0])
    img = np.random.default_rng(0).normal(0, 10, shape).astype(np.float32)
    img[8:20, 8:18, 3:8] += 150
    src = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(img, affine), src)
    out = tmp_path / "mask.nii.gz"
    res = run("segment", src, "--box", 10, 10, 20, 16, "--slice", 5, "--output", out,
              "--engine", "sammed3d", "--quiet")
    assert res.returncode == 0, res.stderr
    written = nib.load(out)
    assert written.shape == shape
    np.testing.assert_allclose(written.affine, affine)
    res = run("segment", src, "--box", 10, 10, 20, 16, "--slice", 50, "--output", out,
              "--engine", "sammed3d", "--quiet")
    assert res.returncode != 0 and "Traceback" not in res.stderr


def test_auto_picks_sammed3d_when_only_its_weights_are_cached() -> None:
    from segloop.engines.registry import resolve_auto
    from segloop.engines.sammed3d.testing import install_tiny_weights

    assert resolve_auto() == "classic"
    install_tiny_weights("sammed3d")  # the alias of sam-med3d-turbo
    assert resolve_auto() == "sammed3d"


def test_clicks_farther_apart_than_one_patch() -> None:
    import threading

    shape = (90, 40, 12)
    vol = Volume(data=np.random.default_rng(0).normal(100, 10, shape).astype(np.float32),
                 affine=np.diag([1.5, 1.5, 1.5, 1.0]), source_format="npz", modality="MR")
    rt = Runtime(model=_all_foreground_model(), device=torch.device("cpu"), use_bf16=False,
                 max_tiles=1, lock=threading.RLock())
    s = SamMed3DSession(rt, vol)
    s.segment_slice(6, Prompts.make(points=[(10, 20)], labels=[1]))
    # a click 70 voxels (105 mm) away: more than one 32-voxel patch from the first
    res = list(s.refine(6, Prompts.make(points=[(80, 20)], labels=[1])))
    assert res and res[0].z == 6
    assert s.prediction_info(1)["start"][0] == 10 - 16, "keeps the first positive click's patch"
    assert s.mask(1)[10, 20, 6]
