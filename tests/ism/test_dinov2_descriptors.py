"""SAM-6D's DINOv2 descriptor details: crop-scale-pad, Meta's position resampling, the key map."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import torch.nn.functional as F  # noqa: E402

from segloop.errors import InputError  # noqa: E402
from segloop.ism.dinov2_convert import dinov2_original_to_hf  # noqa: E402
from segloop.ism.dinov2_descriptors import (  # noqa: E402
    DinoDescriber,
    crop_scale_pad,
    use_meta_position_interpolation,
)
from segloop.ism.types import Templates  # noqa: E402


def _tiny_dino(image_size: int = 70) -> object:
    torch.manual_seed(0)
    return transformers.Dinov2Model(transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=14,
        image_size=image_size))


def test_crop_scale_pad_by_hand() -> None:
    img = torch.arange(100, dtype=torch.float32).reshape(1, 10, 10) + 1
    out = crop_scale_pad(img, (2, 3, 6, 5))  # rows 3..4, cols 2..5 (exclusive end): 2 × 4
    assert out.shape == (1, 224, 224)
    # longest side 4 → ×56, nearest: a 112 × 224 block, 56 rows of zeros above and below
    assert torch.all(out[0, :56] == 0) and torch.all(out[0, 168:] == 0)
    assert out[0, 56, 0] == img[0, 3, 2] and out[0, 56 + 55, 55] == img[0, 3, 2]
    assert out[0, 56 + 56, 56] == img[0, 4, 3] and out[0, 167, 223] == img[0, 4, 5]
    tall = crop_scale_pad(img, (0, 0, 1, 4))  # 4 × 1: a 224 × 56 column centred at x 84..139
    assert torch.all(tall[0, :, :84] == 0) and torch.all(tall[0, :, 140:] == 0)
    assert torch.all(tall[0, :56, 84:140] == img[0, 0, 0])


def test_meta_position_interpolation_uses_scale_factor_with_offset() -> None:
    dino = _tiny_dino(70)  # 5 × 5 position grid
    emb = dino.embeddings
    x = torch.zeros(1, 1 + 16, 32)  # a 56 × 56 input: 4 × 4 patches
    default = emb.interpolate_pos_encoding(x, 56, 56)
    use_meta_position_interpolation(dino)
    meta = emb.interpolate_pos_encoding(x, 56, 56)
    grid = emb.position_embeddings[:, 1:].reshape(1, 5, 5, 32).permute(0, 3, 1, 2)
    want = F.interpolate(grid, scale_factor=(4.1 / 5, 4.1 / 5), mode="bicubic", antialias=False)
    assert meta.shape == default.shape == (1, 17, 32)
    assert torch.allclose(meta[0, 1:], want.permute(0, 2, 3, 1).reshape(16, 32), atol=1e-6)
    assert torch.equal(meta[0, 0], emb.position_embeddings[0, 0])
    assert not torch.allclose(meta, default, atol=1e-4)  # transformers resamples to size=4 instead


def _to_meta(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta's layout of a transformers Dinov2Model state (the inverse map, written independently)."""
    out: dict[str, torch.Tensor] = {}
    top = {"embeddings.cls_token": "cls_token", "embeddings.mask_token": "mask_token",
           "embeddings.position_embeddings": "pos_embed", "layernorm.weight": "norm.weight",
           "layernorm.bias": "norm.bias", "embeddings.patch_embeddings.projection.weight":
           "patch_embed.proj.weight", "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias"}
    for k, v in hf.items():
        if k in top:
            out[top[k]] = v
            continue
        i = k.split(".")[2]
        rest = k.split(".", 3)[3]
        if rest.startswith("attention.q_proj"):
            kind = rest.rsplit(".", 1)[1]
            out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(
                [hf[f"encoder.layer.{i}.attention.{n}.{kind}"] for n in ("q_proj", "k_proj", "v_proj")])
        elif rest.startswith(("attention.k_proj", "attention.v_proj")):
            continue
        elif rest.startswith("attention.o_proj"):
            out[f"blocks.{i}.attn.proj.{rest.rsplit('.', 1)[1]}"] = v
        elif rest.startswith("layer_scale"):
            out[f"blocks.{i}.ls{rest[11]}.gamma"] = v
        else:
            out[f"blocks.{i}.{rest}"] = v
    return out


def test_meta_checkpoint_round_trip() -> None:
    a = _tiny_dino()
    state = {k: v + 0.01 * torch.randn(v.shape) for k, v in a.state_dict().items()}
    a.load_state_dict(state)
    b = _tiny_dino()
    b.load_state_dict(dinov2_original_to_hf(_to_meta(state)), strict=True)
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        assert torch.equal(a(pixel_values=x).last_hidden_state, b(pixel_values=x).last_hidden_state)
    qkv = torch.arange(12.0).reshape(6, 2)
    conv = dinov2_original_to_hf({"blocks.3.attn.qkv.weight": qkv, "blocks.3.ls2.gamma": torch.ones(2)})
    assert torch.equal(conv["encoder.layer.3.attention.k_proj.weight"], qkv[2:4])
    assert "encoder.layer.3.layer_scale2.lambda1" in conv
    with pytest.raises(InputError, match="register"):
        dinov2_original_to_hf({"register_tokens": qkv})


def test_template_descriptors_mask_patches() -> None:
    d = DinoDescriber(_tiny_dino(518))
    masks = np.zeros((1, 100, 100), dtype=bool)
    masks[0, 20:80, 30:60] = True  # 60 tall × 30 wide: the crop fills the middle half in x
    rgb = np.full((1, 100, 100, 3), 200, dtype=np.uint8)
    desc = d.describe_templates(Templates(rgb, masks, np.eye(3)[None], np.zeros((1, 3)), "t"))
    norms = np.linalg.norm(desc.patches[0].reshape(16, 16, -1), axis=-1)
    assert desc.global_.shape == (1, 32)
    assert np.allclose(norms[:, 4:12], 1, atol=1e-5)  # patches inside the mask: unit rows
    assert np.all(norms[:, :4] == 0) and np.all(norms[:, 12:] == 0)  # outside: zero


def test_weights_from_sam6d_checkpoint_folder(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from segloop.ism.sam_backend import SAM6D_FILES, _sam6d_state

    a = _tiny_dino()
    f = tmp_path / SAM6D_FILES["dinov2-vitl14"]
    f.parent.mkdir(parents=True)
    torch.save(_to_meta(a.state_dict()), f)
    state = _sam6d_state("dinov2-vitl14", tmp_path)
    assert state is not None
    b = _tiny_dino()
    b.load_state_dict(state, strict=True)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert _sam6d_state("sam-vit-h", tmp_path) is None  # no segment-anything file there
