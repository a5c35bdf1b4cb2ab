"""The tracking step's switches (``sync_free``, ``compile``) give the plain step's masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from segloop.engines.base import drive
from segloop.engines.sam2 import MedSAM2Engine
from segloop.engines.sam2.faststep import CompiledPart
from segloop.engines.sam2.testing import install_tiny_weights
from segloop.io.volume import Volume
from segloop.types import BoolArray, Prompts

KEY = 22  # 22 slices tracked each way: more than the memory bank holds (it fills, then slides)


def _volume(seed: int) -> Volume:
    rng = np.random.default_rng(seed)
    data = rng.normal(0.0, 40.0, (40, 52, 2 * KEY + 1)).astype(np.float32) - 100.0
    data[8:24, 12:40, 3:-3] += 250.0
    return Volume(data=data, affine=np.eye(4), source_format="npz", modality="CT")


def _track(seed: int, **options: object) -> tuple[BoolArray, MedSAM2Engine]:
    install_tiny_weights("medsam2", image_size=64, seed=seed)
    engine = MedSAM2Engine(window="soft_tissue", fill_holes=8, **options)  # type: ignore[arg-type]
    s = engine.open(_volume(seed))
    s.segment_slice(KEY, Prompts.make(box=(8, 12, 23, 39)))
    drive(s.propagate(KEY))
    return s.mask(), engine


def _ious(a: BoolArray, b: BoolArray) -> np.ndarray:
    inter = (a & b).sum(axis=(0, 1))
    union = (a | b).sum(axis=(0, 1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


@pytest.mark.parametrize(("seed", "post"), [(2, True), (4, False)])
def test_sync_free_tracking_gives_identical_masks(seed: int, post: bool) -> None:
    plain, _ = _track(seed, device_post=post, sync_free=False)
    fast, engine = _track(seed, device_post=post, sync_free=True)
    rt = engine.runtime()
    assert rt.sync_free and rt.fast.cached_offsets > 0, "the memoised offsets were used"
    assert plain.any() and not plain.all(), "a degenerate mask would test nothing"
    for z in range(plain.shape[2]):
        assert np.array_equal(plain[:, :, z], fast[:, :, z]), z


def test_a_failing_compiler_falls_back_to_eager() -> None:
    def broken(_gm: object, _inputs: object) -> object:
        raise RuntimeError("no C++ compiler here")

    lin = torch.nn.Linear(4, 3)
    part = CompiledPart("lin", lin.forward, torch.device("cpu"), backend=broken)
    x = torch.randn(2, 4)
    assert torch.equal(part(x), lin(x)) and part.calls == 0, "inactive: eager, nothing compiled"
    part.active = True
    with torch.inference_mode():
        out = part(x)
        assert torch.equal(out, lin(x))
    assert part.failed and "no C++ compiler here" in part.reason
    assert torch.equal(part(x), lin(x)), "stays eager once failed"


def test_bench_engine_takes_the_switches(capsys: pytest.CaptureFixture[str]) -> None:
    from segloop.cli import main

    assert main(["bench", "engine", "--size", "64", "--xy", "32", "--slices", "2",
                 "--threads", "1", "--sync-free", "on", "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["sync_free"] is True and row["compile"] is False and row["tracked_slices"] == 2


@pytest.mark.slow
def test_compiled_tracking_gives_the_plain_masks(capsys: pytest.CaptureFixture[str]) -> None:
    """torch.compile (inductor's C++ backend on a CPU: minutes on a busy 2-core machine)."""
    plain, _ = _track(2, device_post=True)
    compiled, engine = _track(2, device_post=True, compile=True)
    fast = engine.runtime().fast
    assert not fast.compile_failures
    assert all(p.calls > 0 for p in fast.parts.values()), "every part ran compiled"
    assert plain.any() and not plain.all()
    assert _ious(plain, compiled).min() >= 0.999
    both, _ = _track(2, device_post=True, compile=True, sync_free=True)
    assert _ious(plain, both).min() >= 0.999
    from segloop.cli import main

    assert main(["bench", "engine", "--size", "64", "--xy", "32", "--slices", "2",
                 "--threads", "1", "--compile", "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["compile"] is True and row["compile_warmup_s"] > 0


def test_resident_frames_are_taken_as_views_for_runs_of_slices() -> None:
    """``sync_free`` uploads the uint8 volume once; an encoder batch (a run of slices, up or
    down) is then a view of it, with no host->device index copy."""
    from segloop.engines.sam2.features import _take

    u8 = torch.arange(5 * 2 * 3, dtype=torch.uint8).view(5, 2, 3)
    for zs in ([1, 2, 3], [3, 2, 1], [4, 0, 2], [2]):
        assert torch.equal(_take(u8, zs), u8[zs]), zs
    assert _take(u8, [1, 2, 3]).data_ptr() == u8[1].data_ptr()
