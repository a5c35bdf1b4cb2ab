"""Loading a cached model holds its weights once: the model takes the loaded tensors themselves."""

from __future__ import annotations

from typing import Any

import pytest

from segloop.models.store import import_model

from .conftest import TinyCheckpoint


def test_load_model_keeps_one_copy_of_the_weights(tiny_checkpoint: TinyCheckpoint,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch
    import torch

    from segloop.models.loader import ensure_converted, load_model

    import_model(tiny_checkpoint.path, "medsam2", config=tiny_checkpoint.config)
    ensure_converted("medsam2")
    loaded: list[int] = []
    real = safetensors.torch.load_file

    def recording(*args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        sd: dict[str, torch.Tensor] = real(*args, **kwargs)
        loaded.extend(t.untyped_storage().data_ptr() for t in sd.values())
        return sd

    monkeypatch.setattr(safetensors.torch, "load_file", recording)
    model = load_model("medsam2")
    params = dict(model.named_parameters())
    persistent = model.state_dict()
    assert loaded and len(loaded) == len(persistent)
    # every weight is one of the tensors read from the file: no second, copied-into model
    copies = [k for k, t in persistent.items() if t.untyped_storage().data_ptr() not in loaded]
    assert not copies, f"{len(copies)} of {len(persistent)} weights are copies, e.g. {copies[:3]}"
    assert all(p.requires_grad for p in params.values())  # as a model built normally
    assert not [n for n, b in model.named_buffers() if b.is_meta], "every buffer is materialised"
    # the weights are the checkpoint's (the non-persistent RoPE buffers rebuilt as at build)
    raw = torch.load(tiny_checkpoint.path, weights_only=True)["model"]
    assert torch.equal(params["mask_decoder.iou_token.weight"],
                       raw["sam_mask_decoder.iou_token.weight"])
    from segloop.models.loader import build_model

    ref = build_model(tiny_checkpoint.config)
    for (name, a), (_, b) in zip(model.named_buffers(), ref.named_buffers(), strict=True):
        if name.endswith(("inv_freq", "position_ids")):
            assert torch.equal(a, b), name
