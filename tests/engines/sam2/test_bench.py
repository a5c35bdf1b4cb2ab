"""``bench_engine`` on a long volume: --xy, --track, RSS per phase and per-part times."""

from __future__ import annotations

from segloop.engines.sam2.bench import PARTS, bench_engine
from segloop.models.configs import tiny_config


def test_a_correction_in_a_long_volume_tracks_only_its_span() -> None:
    r = bench_engine(config=tiny_config(64), slices=30, threads=1, repeats=1, xy=48, track=6)
    assert r.xy == 48 and r.tracked_slices == 6
    assert 0 < r.rss_model_mb <= r.rss_open_mb <= r.peak_memory_mb
    assert set(r.parts_ms) == {*PARTS, "other"} and set(r.parts_cpu_ms) == set(r.parts_ms)
    assert r.parts_ms["image_encoder"] > 0 and r.parts_ms["memory_attention"] > 0
    assert r.device_post is False, "the CPU default: scipy post-processing"
    full = bench_engine(config=tiny_config(64), slices=6, threads=1, repeats=1, xy=48,
                        device_post=True)
    assert full.tracked_slices == 6 and full.device_post is True
