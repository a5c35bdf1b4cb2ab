"""The cached decoder (segloop.engines.medsam.fast_decode) gives SamModel's own logits and IoU
score: on the real ViT-B decoder size with every weight and bias perturbed, for a box, points,
both and no prompt, and through MedSAMPredictor on an encoded image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segloop.engines.medsam.fast_decode import decode, prepare
from segloop.engines.medsam.predictor import Embedding, MedSAMPredictor
from segloop.models.sam_v1 import build_sam_model, sam_vit_b_config, tiny_sam_config
from segloop.types import Prompts

TOL = 1e-5


def _perturbed(config: object) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_sam_model(config).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # biases start at zero: perturb so every bias term is exercised
        for mod in (model.mask_decoder, model.prompt_encoder, model.shared_image_embedding):
            for p in mod.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


PROMPTS = {
    "box": {"input_boxes": torch.tensor([[[212.0, 300.5, 700.0, 811.0]]])},
    "points": {"input_points": torch.tensor([[[[400.0, 500.0], [610.0, 655.0], [90.0, 30.0]]]]),
               "input_labels": torch.tensor([[[1, 0, 1]]])},
    "box+points": {"input_boxes": torch.tensor([[[212.0, 300.5, 700.0, 811.0]]]),
                   "input_points": torch.tensor([[[[400.0, 500.0]]]]),
                   "input_labels": torch.tensor([[[0]]])},
    "none": {},
}


@pytest.mark.parametrize("name", list(PROMPTS))
def test_vit_b_decoder_matches_sam_model(name: str) -> None:
    torch.set_num_threads(1)
    model = _perturbed(sam_vit_b_config(1024))
    emb = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(2))
    kw = PROMPTS[name]
    with torch.inference_mode():
        ref = model(image_embeddings=emb, multimask_output=False, **kw)
        sparse, _ = model.prompt_encoder(input_points=kw.get("input_points"),
                                         input_labels=kw.get("input_labels"),
                                         input_boxes=kw.get("input_boxes"), input_masks=None)
        low, iou = decode(model, prepare(model, emb), sparse)
    want = ref.pred_masks[:, 0, :1]
    assert low.shape == want.shape == (1, 1, 256, 256)
    assert float(want.abs().max()) > 0.1  # not a degenerate all-zero comparison
    assert float((low - want).abs().max()) <= TOL
    assert abs(iou - float(ref.iou_scores[0, 0, 0])) <= TOL


def test_predictor_uses_the_cache_and_matches_the_reference() -> None:
    torch.set_num_threads(1)
    model = _perturbed(tiny_sam_config(64))
    pred = MedSAMPredictor(model=model, device=torch.device("cpu"), image_size=64)
    img = np.random.default_rng(0).integers(0, 255, (40, 52, 3), dtype=np.uint8)
    emb = pred.encode(img)
    assert emb.cache is not None
    no_cache = Embedding(features=emb.features, height=emb.height, width=emb.width)
    for prompts in (Prompts(box=(5, 4, 30, 33)),
                    Prompts(points=np.array([[10, 12], [40, 30]]), labels=np.array([1, 0])),
                    Prompts(box=(5, 4, 30, 33), points=np.array([[20, 20]]), labels=np.array([1]))):
        want, want_iou = pred.reference_logits_and_score(emb, prompts)
        for e in (emb, no_cache):
            got, iou = pred.logits_and_score(e, prompts)
            assert float((got - want).abs().max()) <= TOL and abs(iou - want_iou) <= TOL
        up = torch.nn.functional.interpolate(torch.sigmoid(want), size=(40, 52), mode="bilinear",
                                             align_corners=False)[0, 0].numpy() > 0.5
        np.testing.assert_array_equal(pred.predict(emb, prompts), up)
