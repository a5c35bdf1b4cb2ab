"""Sessions sharing one runtime through the device scheduler: the same masks and features as the
unscheduled path (random hiera-tiny weights), shared batches, a 2D prompt during another job's
propagation, the engine option."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from engines.sam2.bright_block import bright_block_volume, iou
from segloop.engines.sam2 import MedSAM2Engine
from segloop.engines.sam2.runtime import Runtime
from segloop.engines.sam2.session import Sam2Session
from segloop.engines.sam2.testing import install_tiny_weights
from segloop.engines.scheduler import DeviceLock, client_scope
from segloop.io.volume import Volume
from segloop.models.configs import build_config, tiny_config
from segloop.models.loader import build_model
from segloop.types import Prompts

BOX = Prompts.make(box=(8, 12, 23, 39))




def _runtime(model: object, encode_batch: int, scheduler_batch: int | None) -> Runtime:
    rt = Runtime(model=model, model_name="random", device=torch.device("cpu"), use_bf16=False,
                 image_size=int(model.config.image_size), window="soft_tissue",  # type: ignore[attr-defined]
                 largest_component=True, fill_holes=0, cache_frames=64,
                 lock=threading.RLock(), cache_mb=256.0, encode_batch=encode_batch)
    if scheduler_batch is not None:
        rt.start_scheduler(scheduler_batch, max_wait_s=0.005)
    return rt


def _session_run(rt: Runtime, vol: Volume, user: str) -> tuple[np.ndarray, np.ndarray]:
    with client_scope(user):
        s = Sam2Session(rt, vol)
        first = s.segment_slice(6, BOX)
        for _ in s.propagate(6):
            pass
        return first, s.mask()


@pytest.fixture(scope="module")
def hiera_tiny() -> object:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return build_model(build_config("tiny", 128))


@pytest.mark.parametrize("encode_batch", [1, 4])
def test_concurrent_scheduled_sessions_give_the_unscheduled_masks(hiera_tiny: object,
                                                                  encode_batch: int) -> None:
    vols = [bright_block_volume(12, seed) for seed in (1, 2, 3)]
    ref = [_session_run(_runtime(hiera_tiny, encode_batch, None), v, "solo") for v in vols]
    rt = _runtime(hiera_tiny, encode_batch, scheduler_batch=4)
    got: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    start = threading.Barrier(len(vols))

    def user(k: int) -> None:
        start.wait()
        got[k] = _session_run(rt, vols[k], f"user{k}")

    threads = [threading.Thread(target=user, args=(k,)) for k in range(len(vols))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert rt.scheduler is not None and isinstance(rt.lock, DeviceLock)
    stats = rt.scheduler.stats
    assert stats.slices == 3 * 12, "every slice of every session is encoded once, by the scheduler"
    assert stats.largest > 1, "concurrent sessions' slices share batches"
    for k in range(len(vols)):
        (first_ref, mask_ref), (first, mask) = ref[k], got[k]
        assert mask_ref.any() and not mask_ref.all(), "a degenerate mask would test nothing"
        assert iou(first_ref, first) >= 0.999
        ious = [iou(mask_ref[:, :, z], mask[:, :, z]) for z in range(12)]
        assert min(ious) >= 0.999, (k, ious)


def test_shared_batch_features_equal_one_slice_features(hiera_tiny: object) -> None:
    rt = _runtime(hiera_tiny, 1, scheduler_batch=8)
    sessions = [Sam2Session(rt, bright_block_volume(6, seed)) for seed in (4, 5)]
    rows = [list(s._frames.batch([0, 3]).unbind(0)) for s in sessions]
    alone = [rt.encode_parts([[r]]) for part in rows for r in part]
    shared = rt.encode_parts(rows)  # two sessions' slices in one encoder batch
    assert len(shared) == 4
    for a, b in zip(alone, shared, strict=True):
        for fa, fb in zip(a[0].feats, b.feats, strict=True):
            torch.testing.assert_close(fa, fb, atol=1e-4, rtol=1e-4)
        for pa, pb in zip(a[0].pos, b.pos, strict=True):
            torch.testing.assert_close(pa, pb)


def test_a_2d_prompt_during_a_long_propagation_finishes_before_it() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rt = _runtime(build_model(tiny_config(64)), encode_batch=4, scheduler_batch=4)
    a = Sam2Session(rt, bright_block_volume(80, 6))
    b = Sam2Session(rt, bright_block_volume(12, 7))
    a.segment_slice(1, BOX)
    tracked: list[int] = []
    started = threading.Event()

    def propagate() -> None:
        with client_scope("ana"):
            for r in a.propagate(1):
                tracked.append(r.z)
                if len(tracked) == 5:
                    started.set()

    t = threading.Thread(target=propagate)
    t.start()
    assert started.wait(300)
    with client_scope("ben"):
        before = len(tracked)
        b.segment_slice(6, BOX)
        after = len(tracked)
    t.join(300)
    total = len(tracked)
    assert total >= 78, "the propagation ran to its end"
    assert after < total, f"the 2D prompt waited for the whole propagation ({before}..{after})"


def test_the_engine_option_and_its_environment_default(monkeypatch: pytest.MonkeyPatch) -> None:
    install_tiny_weights("medsam2", image_size=64)
    assert MedSAM2Engine().scheduler is False, "opt-in: off by default"
    monkeypatch.setenv("SEGLOOP_SAM2_SCHEDULER", "on")
    eng = MedSAM2Engine(scheduler_batch=3)
    s = eng.open(bright_block_volume(8, 1))
    rt = eng.runtime()
    assert rt.scheduler is not None and rt.scheduler.max_batch == 3
    s.segment_slice(4, BOX)
    assert rt.scheduler.stats.slices == 1
    assert MedSAM2Engine(scheduler=False).scheduler is False
    monkeypatch.setenv("SEGLOOP_SAM2_SCHEDULER", "maybe")
    with pytest.raises(ValueError, match="SEGLOOP_SAM2_SCHEDULER must be on or off"):
        MedSAM2Engine()
    rt.scheduler.close()
    deadline = time.monotonic() + 30
    while rt.scheduler._thread is not None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
