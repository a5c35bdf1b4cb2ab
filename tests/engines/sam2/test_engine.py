"""The SAM 2 engines with tiny random weights: MedSAM2's pipeline, axes, anchors, caching."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from segloop.engines.base import drive
from segloop.engines.registry import resolve_auto
from segloop.engines.sam2 import MedSAM2Engine, Sam21TinyEngine
from segloop.engines.sam2.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    fill_holes_in_scores,
    largest_component,
)
from segloop.engines.sam2.testing import install_tiny_weights
from segloop.errors import EngineError, ModelNotAvailableError
from segloop.io.volume import Volume
from segloop.types import Prompts, SliceResult

SIZE = 64


def _volume(shape: tuple[int, int, int] = (40, 52, 12), seed: int = 0,
            affine: np.ndarray | None = None) -> Volume:
    rng = np.random.default_rng(seed)
    data = rng.normal(0.0, 40.0, shape).astype(np.float32) - 100.0
    data[8:24, 12:40, 2:10] += 250.0
    return Volume(data=data, affine=np.eye(4) if affine is None else affine,
                  source_format="npz", modality="CT")


#: an LPS-stored volume (the usual DICOM-derived storage): what MedSAM2 reads as stored
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.fixture
def engine() -> MedSAM2Engine:
    install_tiny_weights("medsam2", image_size=SIZE)
    return MedSAM2Engine()


def test_auto_picks_medsam2_once_weights_are_cached() -> None:
    assert MedSAM2Engine.unavailable_reason() is not None
    assert resolve_auto() != "medsam2"
    install_tiny_weights("medsam2", image_size=SIZE)
    assert MedSAM2Engine.unavailable_reason() is None
    assert resolve_auto() == "medsam2"


def test_other_variants_and_sam21_messages() -> None:
    assert Sam21TinyEngine.unavailable_reason() == (
        "weights not cached: run `segloop models pull sam2.1-tiny` or"
        " `segloop models import FILE --as sam2.1-tiny`")
    install_tiny_weights("MedSAM2_CTLesion", image_size=SIZE)
    assert MedSAM2Engine.unavailable_reason() is None  # any cached variant will do
    assert MedSAM2Engine().model_name == "MedSAM2_CTLesion"
    with pytest.raises(ModelNotAvailableError, match="models pull MedSAM2_2411"):
        MedSAM2Engine(variant="MedSAM2_2411").open(_volume())
    with pytest.raises(ValueError, match="precision"):
        MedSAM2Engine(precision="fp16")


def test_box_maps_to_model_pixels_and_masks_keep_their_axes(engine: MedSAM2Engine) -> None:
    s = engine.open(_volume((40, 52, 6)))  # X=40 columns, Y=52 rows
    inp = s._point_inputs(Prompts.make(box=(4, 13, 20, 26), points=[(10, 26)], labels=[0]))
    coords = inp["point_coords"][0, 0].numpy()
    # the model sees the radiological view: canonical (x, y) is view pixel (39 - x, 51 - y),
    # so the box's corners swap
    assert np.allclose(coords, [[19 * 64 / 40, 25 * 64 / 52], [35 * 64 / 40, 38 * 64 / 52],
                                [29 * 64 / 40, 25 * 64 / 52]])
    assert inp["point_labels"][0, 0].tolist() == [2, 3, 0]
    # a mask fed to the model comes back on the same (X, Y) pixels (no transposition slip)
    m = np.zeros((40, 52), bool)
    m[5:30, 10:22] = True
    vs = s._new_video_session()
    s._add_inputs(vs, 3, None, m)
    back = s._run(vs, 3)
    assert back.shape == (40, 52)
    inter, union = (back & m).sum(), (back | m).sum()
    assert inter / union > 0.9


def test_embedding_cache_reruns_only_the_decoder(engine: MedSAM2Engine) -> None:
    s = engine.open(_volume())
    box = Prompts.make(box=(8, 12, 23, 39))
    s.segment_slice(5, box)
    hits, misses = s.cache_stats
    assert misses == 1
    m2 = s.segment_slice(5, Prompts.make(box=(9, 12, 23, 38)))
    assert s.cache_stats == (hits + 1, misses), "a new prompt on an encoded slice re-encoded it"
    assert m2.shape == (40, 52)


def test_propagation_stops_at_anchors_and_refine_starts_from_its_slice(
    engine: MedSAM2Engine,
) -> None:
    s = engine.open(_volume())
    box = Prompts.make(box=(8, 12, 23, 39))
    s.segment_slice(2, box)
    s.segment_slice(9, box)
    res: list[SliceResult] = []
    drive(s.propagate(2), on_progress=res.append)
    # live progress with the 3D filter on: each slice as tracked, then the slices it changed
    assert [r.done for r in res[:8]] == list(range(1, 9)) and res[0].total == 8
    assert sorted(r.z for r in res[:8]) == [0, 1, 3, 4, 5, 6, 7, 8]
    assert all(r.done == r.total for r in res[8:])
    for r in res:
        last = [q for q in res if q.z == r.z][-1]
        assert np.array_equal(s.mask()[:, :, r.z], last.mask)
    res = []
    drive(s.refine(6, Prompts.make(points=[(15, 25)], labels=[1])), on_progress=res.append)
    assert res[0].z == 6
    assert sorted({r.z for r in res[1:]} - {6}) == [3, 4, 5, 7, 8]
    st = s._state.get(1)
    assert st.anchors == {2, 6, 9}


def test_refine_without_prompts_acts_on_the_current_mask(engine: MedSAM2Engine) -> None:
    s = engine.open(_volume())
    m = np.zeros(s.shape, bool)
    m[10:20, 15:30, 4] = True
    s.set_mask(m)
    drive(s.refine(4, Prompts.make(points=[(12, 17)], labels=[0])))
    p = s._state.get(1).prompts[4]
    assert p.box == (10, 15, 19, 29) and p.points.tolist() == [[12, 17]]


def test_propagating_an_empty_slice_is_an_error(engine: MedSAM2Engine) -> None:
    s = engine.open(_volume())
    with pytest.raises(EngineError, match="segment it first"):
        drive(s.propagate(3))


def test_streaming_mode_yields_the_stored_masks() -> None:
    install_tiny_weights("medsam2", image_size=SIZE)
    s = MedSAM2Engine(largest_component=False, fill_holes=4).open(_volume())
    s.segment_slice(5, Prompts.make(box=(8, 12, 23, 39)))
    gen = s.propagate(5)
    first = next(gen)
    assert first.z == 6 and first.total == 11
    rest = list(gen)
    for r in [first, *rest]:
        assert np.array_equal(s.mask()[:, :, r.z], r.mask)


def _medsam2_reference(model: Any, data_xyz: np.ndarray, key: int,
                       box: tuple[int, int, int, int], fill_hole_area: int = 0) -> np.ndarray:
    """MedSAM2's published 3D procedure, written against transformers' API directly.

    As in MedSAM2's video predictor, the key slice's memory is encoded from its stored
    (hole-filled) low-resolution logits upsampled to the model size."""
    from transformers import Sam2VideoInferenceSession

    vol = np.clip(data_xyz.astype(np.float64), -160.0, 240.0)
    vol = ((vol - vol.min()) / (vol.max() - vol.min()) * 255.0).astype(np.uint8)
    img = vol.transpose(2, 1, 0)  # (D, H, W)
    d, h, w = img.shape
    frames = np.stack([np.asarray(Image.fromarray(sl).convert("RGB").resize((SIZE, SIZE)))
                       .transpose(2, 0, 1) for sl in img]) / 255.0
    frames = (frames - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]
    video = torch.from_numpy(frames).float()
    seg = np.zeros((d, h, w), bool)
    pts = torch.tensor([[[[box[0] / w * SIZE, box[1] / h * SIZE],
                          [box[2] / w * SIZE, box[3] / h * SIZE]]]])
    for reverse in (False, True):
        vs = Sam2VideoInferenceSession(video=video, video_height=h, video_width=w,
                                       dtype=torch.float32)
        idx = vs.obj_id_to_idx(1)
        vs.add_point_inputs(idx, key, {"point_coords": pts,
                                       "point_labels": torch.tensor([[[2, 3]]], dtype=torch.int32)})
        vs.obj_with_new_inputs = [1]
        order = range(key, -1, -1) if reverse else range(key, d)
        with torch.inference_mode():
            for t in order:
                out = model(vs, frame_idx=t, reverse=reverse, run_mem_encoder=t != key)
                low = out.pred_masks[:1].float()
                if fill_hole_area:
                    low = torch.from_numpy(fill_holes_in_scores(low[0, 0].numpy(),
                                                                fill_hole_area))[None, None]
                if t == key:  # MedSAM2 encodes the key slice's memory from its stored logits
                    model._batch_encode_memories(
                        inference_session=vs, frame_idx=t, objects_needing_memory_encoding=[0],
                        high_res_masks_for_memory=[F.interpolate(
                            low, size=(SIZE, SIZE), mode="bilinear", align_corners=False)],
                        object_score_logits_for_memory=[vs.get_output(0, t, "object_score_logits")],
                        is_mask_from_pts_per_obj=[True])
                up = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
                seg[t] |= (up[0, 0] > 0).numpy()
    if seg.any():
        seg = largest_component(seg)
    return seg.transpose(2, 1, 0)  # back to (X, Y, Z)


# seeds whose random masks have several components; fill = MedSAM2's fill_hole_area
# nz=30: longer than the memory window, so pruned memory frames are covered too
@pytest.mark.parametrize(("seed", "fill", "nz"), [(2, 0, 12), (4, 0, 12), (5, 0, 12), (2, 40, 12),
                                                  (2, 0, 30)])
def test_pipeline_matches_medsam2s_procedure(seed: int, fill: int, nz: int) -> None:
    install_tiny_weights("medsam2", image_size=SIZE, seed=seed)
    engine = MedSAM2Engine(window="soft_tissue", fill_holes=fill)
    # MedSAM2 reads a file as stored; on the usual LPS storage that is the radiological view
    # segloop feeds every model, so the two agree there whatever segloop's canonical grid is
    vol = _volume((40, 52, nz), seed=seed, affine=LPS)
    box = (8, 12, 23, 39)  # canonical (RAS) voxels
    stored_box = (39 - 23, 51 - 39, 39 - 8, 51 - 12)  # the same box in stored (LPS) voxels
    s = engine.open(vol)
    s.segment_slice(5, Prompts.make(box=box))
    drive(s.propagate(5))
    ours = s.mask()

    def reference(fill_area: int) -> np.ndarray:
        stored = _medsam2_reference(engine.runtime().model, np.asarray(vol.data), 5, stored_box,
                                    fill_area)
        return vol.source_to_canonical(stored)

    ref = reference(fill)
    assert ref.any(), "this seed gives an empty reference: the comparison would be vacuous"
    # by default the whole volume is MedSAM2's, key slice included (its 3D filter may cut it)
    assert np.array_equal(ours, ref), f"{(ours != ref).sum()} voxels differ"
    # filter_key_slice=False keeps the key slice as segment_slice returned it; the rest is equal
    keep = MedSAM2Engine(window="soft_tissue", fill_holes=fill, filter_key_slice=False).open(vol)
    m2 = keep.segment_slice(5, Prompts.make(box=box))
    drive(keep.propagate(5))
    others = [k for k in range(nz) if k != 5]
    diff = (keep.mask()[:, :, others] != ref[:, :, others]).sum()
    assert diff == 0, f"{diff} voxels differ"
    assert np.array_equal(keep.mask()[:, :, 5], m2)
    assert not (ref[:, :, 5] & ~m2).any()
    if fill:  # the filling must have changed something, or this case tests nothing
        assert ours.sum() > reference(0).sum()


@pytest.mark.slow
def test_real_size_hiera_tiny_512_smoke() -> None:
    """Real MedSAM2 architecture (hiera-tiny, 512 px) with random weights, end to end.

    Speed is the benchmark's business (``segloop bench engine``), not this test's."""
    from segloop.engines.sam2.bench import bench_engine

    r = bench_engine("tiny", 512, slices=3, threads=2, repeats=2)
    assert r.image_size == 512 and r.tracked_slices == 3
    assert r.repeated_prompt_ms < 1000 * r.first_prompt_s


def test_an_empty_mask_propagates_as_empty_slices(engine: MedSAM2Engine) -> None:
    s = engine.open(_volume())
    res: list[SliceResult] = []
    drive(s.propagate(4, mask2d=np.zeros(s.shape[:2], bool)), on_progress=res.append)
    assert len(res) == s.shape[2] - 1 and not s.mask().any()


def test_a_per_case_window_in_the_volume_meta_wins(engine: MedSAM2Engine) -> None:
    from dataclasses import replace

    from segloop.engines.sam2.preprocess import to_uint8_volume

    vol = _volume()
    s = engine.open(replace(vol, meta={"window": "lung"}))
    assert np.array_equal(s._u8, to_uint8_volume(vol.canonical().data, "CT", "lung"))
    assert not np.array_equal(s._u8, engine.open(vol)._u8)


def test_bench_engine_reports_its_figures() -> None:
    from segloop.engines.sam2.bench import bench_engine
    from segloop.models.configs import tiny_config

    r = bench_engine(config=tiny_config(SIZE), slices=3, threads=1, repeats=2)
    d = r.as_dict()
    assert d["image_size"] == SIZE and d["tracked_slices"] == 3 and d["precision"] == "fp32"
    assert all(d[k] > 0 for k in ("encoder_s", "tracked_slice_s", "repeated_prompt_ms",
                                  "peak_memory_mb", "tracked_slice_cpu_s"))


def test_conditioning_slices_stay_encoded_during_a_propagation() -> None:
    install_tiny_weights("medsam2", image_size=SIZE)
    s = MedSAM2Engine(cache_frames=2).open(_volume())
    s.segment_slice(5, Prompts.make(box=(8, 12, 23, 39)))
    drive(s.propagate(5))
    assert s.cache_stats[1] == s.shape[2], "each slice is encoded once, the key slice included"


def _encoded_memory(model: Any, vs: Any, z: int, high_res_logits: torch.Tensor) -> torch.Tensor:
    """SAM 2's memory of slice z from mask logits at model size (binarised: a prompted slice)."""
    feats, _ = model._prepare_vision_features(vs, z, batch_size=1)
    score = vs.get_output(0, z, "object_score_logits", is_conditioning_frame=True)
    with torch.inference_mode():
        mem, _ = model._encode_new_memory(current_vision_feats=feats[-1],
                                          pred_masks_high_res=high_res_logits,
                                          object_score_logits=score, is_mask_from_pts=True)
    return mem.float()


@pytest.mark.parametrize("fill", [0, 8])
def test_conditioning_memory_comes_from_the_stored_low_res_logits(fill: int) -> None:
    """Checked against MedSAM2's own code (sam2_video_predictor_npz, hiera-tiny 512, random
    weights): its video predictor encodes a prompted slice's memory when propagation starts,
    from the slice's *stored* low-resolution logits (hole-filled when ``fill_hole_area`` > 0)
    upsampled bilinearly to the model size; transformers' forward encodes from its own
    full-size masks. They differ for a mask input (downsampled, then upsampled) and whenever
    the hole filling changed the stored logits; the masks propagated from it differ too."""
    install_tiny_weights("medsam2", image_size=SIZE)
    s = MedSAM2Engine(fill_holes=fill).open(_volume((40, 52, 6)))
    model = s._rt.model
    m = np.zeros((40, 52), bool)  # (X, Y); model pixels: x * 64 / 40, y * 64 / 52
    m[5:36, 8:46] = True
    m[18:23, 24:30] = False  # a hole of about 2 x 2 low-resolution pixels
    vs = s._new_video_session()
    s._add_inputs(vs, 3, None, m)
    s._run_conditioning(vs, 3)
    stored = vs.output_dict_per_obj[0]["cond_frame_outputs"][3]
    low = stored["pred_masks"][:1].float()
    filled = torch.from_numpy(fill_holes_in_scores(low[0, 0].numpy(), fill))[None, None]
    assert not fill or not torch.equal(filled, low), "the hole must be filled, or this tests nothing"
    up = F.interpolate(filled, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    expected = _encoded_memory(model, vs, 3, up)
    assert torch.allclose(stored["maskmem_features"].float(), expected, atol=1e-6)
    # what transformers' forward would store: the full-size mask input as +/-10 logits
    full = s._mask_input(m) * 20.0 - 10.0
    assert not torch.allclose(_encoded_memory(model, vs, 3, full), expected, atol=1e-3)
    if fill:
        unfilled = F.interpolate(low, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        assert not torch.allclose(_encoded_memory(model, vs, 3, unfilled), expected, atol=1e-3)


def test_hole_filling_defaults_to_medsam2s_per_device_choice() -> None:
    install_tiny_weights("medsam2", image_size=SIZE)
    assert MedSAM2Engine(device="cpu").runtime().fill_holes == 0  # MedSAM2 skips it on a CPU
    assert MedSAM2Engine(device="cpu", fill_holes=8).runtime().fill_holes == 8
