"""Checkpoint conversion: original SAM 2 names <-> transformers Sam2VideoModel names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from realdata import SHARED_FIXTURES
from segloop.models.configs import HIERA_SIZES, build_config, tiny_config
from segloop.models.convert import hf_to_original, load_original_checkpoint, original_to_hf

FIXTURE = SHARED_FIXTURES / "sam2.1_hiera_t512_state_dict_keys.json"


def _meta_model(config: dict) -> torch.nn.Module:
    from transformers import Sam2VideoConfig, Sam2VideoModel

    with torch.device("meta"):
        return Sam2VideoModel(Sam2VideoConfig(**config))


@pytest.fixture
def fixture_state() -> dict[str, torch.Tensor]:
    if not FIXTURE.is_file():
        pytest.skip(f"key/shape fixture not found at {FIXTURE}")
    shapes = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return {k: torch.empty(v, device="meta") for k, v in shapes.items()}


def test_fixture_converts_and_loads_strictly_into_a_512_model(
    fixture_state: dict[str, torch.Tensor],
) -> None:
    assert len(fixture_state) == 471
    hf = original_to_hf(fixture_state)
    model = _meta_model(build_config("tiny", 512))
    ref = model.state_dict()
    assert set(hf) == set(ref)
    wrong = {k: (tuple(hf[k].shape), tuple(ref[k].shape)) for k in ref
             if tuple(hf[k].shape) != tuple(ref[k].shape)}
    assert not wrong
    result = model.load_state_dict(hf, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    cfg = model.config
    assert cfg.image_size == 512 and cfg.prompt_encoder_config.image_size == 512
    assert cfg.vision_config.backbone_config.image_size == [512, 512]
    assert cfg.vision_config.backbone_feature_sizes == [[128, 128], [64, 64], [32, 32]]
    assert cfg.memory_attention_rope_feat_sizes == [32, 32]


def test_fixture_round_trips_to_original_names(fixture_state: dict[str, torch.Tensor]) -> None:
    back = hf_to_original(original_to_hf(fixture_state))
    assert set(back) == set(fixture_state)
    assert all(tuple(back[k].shape) == tuple(v.shape) for k, v in fixture_state.items())


def test_fixture_does_not_fit_a_1024_model(fixture_state: dict[str, torch.Tensor]) -> None:
    # same keys, but a 1024 model has the same shapes too: the size lives only in the config,
    # which is why the five resolution fields must be set together (checked above)
    hf = original_to_hf(fixture_state)
    assert set(hf) == set(_meta_model(build_config("tiny", 1024)).state_dict())


@pytest.mark.parametrize("size", sorted(HIERA_SIZES))
def test_mapping_is_size_independent(size: str) -> None:
    ref = _meta_model(build_config(size, 1024)).state_dict()
    orig = hf_to_original(ref)
    assert len(orig) == len(ref) + 2  # 4 point embeddings for 1 table, 1 matrix for 2 copies
    assert not any(k.startswith(("vision_encoder", "mask_decoder.")) for k in orig)
    back = original_to_hf(orig)
    assert set(back) == set(ref)
    assert all(tuple(back[k].shape) == tuple(ref[k].shape) for k in ref)


def test_tiny_1024_config_matches_the_transformers_default() -> None:
    from transformers import Sam2VideoConfig, Sam2VideoModel

    with torch.device("meta"):
        default = Sam2VideoModel(Sam2VideoConfig()).state_dict()
    ours = _meta_model(build_config("tiny", 1024)).state_dict()
    assert {k: tuple(v.shape) for k, v in default.items()} == {
        k: tuple(v.shape) for k, v in ours.items()}


def test_unknown_key_is_rejected() -> None:
    with pytest.raises(ValueError, match="unexpected key"):
        original_to_hf({"something.else": torch.zeros(1)})


def test_bad_config_values() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        build_config("tiny", 500)
    with pytest.raises(ValueError, match="unknown Hiera size"):
        build_config("huge", 512)


def test_converted_values_reproduce_the_model(tmp_path: Path) -> None:
    """Original-format save -> load -> convert gives the same weights and the same outputs."""
    from segloop.models.loader import build_model, save_original_checkpoint

    torch.manual_seed(0)
    model = build_model(tiny_config(64))
    path = save_original_checkpoint(model, tmp_path / "tiny.pt")
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"model"}
    sd = original_to_hf(load_original_checkpoint(path))
    ref = model.state_dict()
    assert all(torch.equal(sd[k], ref[k]) for k in ref)
    other = build_model(tiny_config(64))
    other.load_state_dict(sd, strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        a = model.get_image_features(x).fpn_hidden_states[-1]
        b = other.get_image_features(x).fpn_hidden_states[-1]
    assert torch.equal(a, b)


def test_unreadable_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    from segloop.errors import ModelNotAvailableError

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelNotAvailableError, match="not a readable PyTorch checkpoint"):
        load_original_checkpoint(bad)
    torch.save({"weights": [1, 2]}, tmp_path / "odd.pt")
    with pytest.raises(ModelNotAvailableError, match="does not look like a SAM 2 checkpoint"):
        load_original_checkpoint(tmp_path / "odd.pt")
