"""ISM weights imported in their original layout (``segloop models import sam_vit_b_01ec64.pth
--as sam-vit-b``, ``dinov2_vitl14_pretrain.pth --as dinov2-vitl14``) load in the ISM backends.

The SAM file has the official ViT-B names and shapes (../shared/fixtures/sam_vit_b_state_dict_keys.json)
with seeded random values; ViT-H is not tested at full size (2.5 GB) and has no names/shapes
fixture. The DINOv2 file is a tiny ViT in Meta's names (written out here by hand, not by the
converter under test), imported with ``--config``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from realdata import SHARED_FIXTURES  # noqa: E402
from segloop.errors import ModelNotAvailableError  # noqa: E402
from segloop.ism.sam_backend import load_named  # noqa: E402
from segloop.models import store  # noqa: E402
from segloop.models.sam_v1 import sam_hf_to_original  # noqa: E402

FIXTURE = SHARED_FIXTURES / "sam_vit_b_state_dict_keys.json"
CLI = "import sys; from segloop.cli import main; sys.exit(main())"


def _segloop(home: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SEGLOOP_HOME": str(home)}
    return subprocess.run([sys.executable, "-c", CLI, *map(str, args)], capture_output=True, text=True,
                          encoding="utf-8", env=env, timeout=600)


def _official_sam_vit_b(path: Path) -> dict[str, torch.Tensor]:
    """A random ViT-B SAM checkpoint in segment-anything's layout (names and shapes from the fixture)."""
    shapes = json.loads(FIXTURE.read_text())
    g = torch.Generator().manual_seed(0)
    state = {k: 0.02 * torch.randn(shape, generator=g) for k, shape in shapes.items()}
    torch.save(state, path)
    return state


def _meta_dino(path: Path, dim: int = 32, depth: int = 2, mlp: int = 128,
               grid: int = 5) -> dict[str, torch.Tensor]:
    """A tiny DINOv2 ViT/14 in Meta's names (``dinov2_vit*14_pretrain.pth``), seeded random values."""
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, dim), "mask_token": (1, dim), "pos_embed": (1, 1 + grid * grid, dim),
        "patch_embed.proj.weight": (dim, 3, 14, 14), "patch_embed.proj.bias": (dim,),
        "norm.weight": (dim,), "norm.bias": (dim,)}
    per_block: dict[str, tuple[int, ...]] = {
        "norm1.weight": (dim,), "norm1.bias": (dim,), "attn.qkv.weight": (3 * dim, dim),
        "attn.qkv.bias": (3 * dim,), "attn.proj.weight": (dim, dim), "attn.proj.bias": (dim,),
        "ls1.gamma": (dim,), "norm2.weight": (dim,), "norm2.bias": (dim,), "mlp.fc1.weight": (mlp, dim),
        "mlp.fc1.bias": (mlp,), "mlp.fc2.weight": (dim, mlp), "mlp.fc2.bias": (dim,), "ls2.gamma": (dim,)}
    for i in range(depth):
        shapes |= {f"blocks.{i}.{k}": s for k, s in per_block.items()}
    g = torch.Generator().manual_seed(1)
    state = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    torch.save(state, path)
    return state


def test_imported_official_sam_vit_b_loads_in_the_ism_backend(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    if not FIXTURE.is_file():
        pytest.skip(f"{FIXTURE} not found")
    home = tmp_path / "home"
    f = tmp_path / "sam_vit_b_01ec64.pth"
    state = _official_sam_vit_b(f)
    res = _segloop(home, "models", "import", f, "--as", "sam-vit-b", "--convert")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    monkeypatch.setenv("SEGLOOP_HOME", str(home))
    assert store.checkpoint_path("sam-vit-b").is_file()
    model = load_named("sam-vit-b")
    assert isinstance(model, transformers.SamModel)
    back = sam_hf_to_original(model.state_dict())
    assert set(back) == set(state)
    assert all(torch.equal(back[k], v) for k, v in state.items())


def test_imported_meta_dinov2_loads_with_its_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    f = tmp_path / "dinov2_vits14_pretrain.pth"
    state = _meta_dino(f)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                               "mlp_ratio": 4, "patch_size": 14, "image_size": 70}))
    res = _segloop(home, "models", "import", f, "--as", "dinov2-vitl14", "--config", cfg, "--convert")
    assert res.returncode == 0, res.stderr
    monkeypatch.setenv("SEGLOOP_HOME", str(home))
    model = load_named("dinov2-vitl14")
    sd = model.state_dict()
    qkv = state["blocks.1.attn.qkv.weight"]
    assert torch.equal(sd["encoder.layer.1.attention.q_proj.weight"], qkv[:32])
    assert torch.equal(sd["encoder.layer.1.attention.v_proj.weight"], qkv[64:])
    assert torch.equal(sd["encoder.layer.0.layer_scale2.lambda1"], state["blocks.0.ls2.gamma"])
    assert torch.equal(sd["embeddings.position_embeddings"], state["pos_embed"])


def test_a_checkpoint_of_another_model_is_refused_with_its_name(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGLOOP_HOME", str(tmp_path / "home"))
    f = tmp_path / "dinov2_vits14_pretrain.pth"
    _meta_dino(f)
    store.import_model(f, "sam-vit-b")  # a DINOv2 file under a SAM name
    with pytest.raises(ModelNotAvailableError, match="does not fit sam-vit-b"):
        load_named("sam-vit-b")
    res = _segloop(tmp_path / "home", "models", "import", f, "--as", "sam-vit-b", "--convert")
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    assert "does not fit sam-vit-b" in res.stderr
