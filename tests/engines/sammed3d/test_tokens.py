"""The SAM-Med3D visual-token head: shapes, strict save/load, and that its objective trains it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from segloop.engines.sammed3d.config import SamMed3DConfig
from segloop.engines.sammed3d.model import SamMed3D
from segloop.engines.sammed3d.tokens import (
    CONFIG_KEY,
    STATE_KEY,
    VisualTokenConfig,
    VisualTokenHead,
    load_visual_token_head,
)
from segloop.errors import InputError


def _cfg(dim: int = 6, count: int = 5) -> VisualTokenConfig:
    c = SamMed3DConfig.tiny()
    return VisualTokenConfig(dim=dim, count=count, in_dim=c.prompt_dim, grid=c.grid, patch=c.patch_size)


def test_tokens_from_real_encoder_features_have_the_asked_shape() -> None:
    torch.manual_seed(0)
    model = SamMed3D(SamMed3DConfig.tiny()).eval()
    head = VisualTokenHead(_cfg(dim=6, count=5))
    assert head.config.heads() == 2  # 8 and 4 do not divide 6
    with torch.no_grad():
        emb = model.encode(torch.randn(3, 1, 32, 32, 32))
        tok = head(emb)
    assert tok.shape == (3, 5, 6)
    assert torch.isfinite(tok).all()
    assert not torch.allclose(tok[0], tok[1])  # the tokens depend on the image
    with pytest.raises(InputError, match="48-channel features"):
        head(torch.zeros(1, 7, 4, 4, 4))
    with pytest.raises(InputError, match="dim >= 1"):
        VisualTokenConfig(dim=0)


def test_head_saved_next_to_the_encoder_loads_strictly(tmp_path: Path) -> None:
    torch.manual_seed(1)
    head = VisualTokenHead(_cfg(dim=8, count=3))
    path = tmp_path / "sam_encoder.pth"
    torch.save({"image_encoder_state_dict": {}, STATE_KEY: head.state_dict(),
                CONFIG_KEY: head.config.to_json()}, path)
    back = load_visual_token_head(path)
    assert back.config == head.config
    x = torch.randn(2, 48, 4, 4, 4)
    with torch.no_grad():
        assert torch.equal(back(x), head.eval()(x))
    # a missing tensor is an error, not a silently random head
    sd = dict(head.state_dict())
    sd.pop("queries")
    torch.save({STATE_KEY: sd, CONFIG_KEY: head.config.to_json()}, path)
    with pytest.raises(RuntimeError, match="queries"):
        load_visual_token_head(path)
    torch.save({"image_encoder_state_dict": {}}, path)
    with pytest.raises(InputError, match="no visual-token head"):
        load_visual_token_head(path)


def test_occupancy_objective_trains_the_head() -> None:
    torch.manual_seed(2)
    head = VisualTokenHead(_cfg(dim=8, count=4))
    feats = torch.randn(4, 48, 4, 4, 4)
    target = torch.zeros(4, 1, 32, 32, 32)
    for i in range(4):  # a different target box per image
        target[i, 0, 4 * i:4 * i + 12, 8:20, 2 + 3 * i:18] = 1
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2)
    with torch.no_grad():
        first = float(head.occupancy_loss(head(feats), target))
    for _ in range(60):
        loss = head.occupancy_loss(head(feats), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        last = float(head.occupancy_loss(head(feats), target))
    assert last < 0.5 * first, (first, last)
