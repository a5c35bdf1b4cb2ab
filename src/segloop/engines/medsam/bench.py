"""Speed benchmark of the ``medsam`` engine with random ViT-B weights (imports torch).

:func:`bench_medsam` builds SAM ViT-B at ``image_size`` px (random weights: speed does not
depend on the values) and measures, on a synthetic ``height`` x ``width`` image: MedSAM's
preprocessing (3 channels, bicubic anti-aliased resize, min-max), the image encoder, a first
box (encode + decode), and a repeated box on the encoded image: the decoder alone (prompt
encoder + mask decoder, low-resolution logits; segloop's cached decoder and, alternated with
it call by call, ``SamModel``'s own forward, with the largest logit difference between them)
and with MedSAM's post-processing (sigmoid, upsampling to the image, threshold).
Medians over ``repeats``; ``*_cpu_*`` are process CPU time (on a shared machine, CPU time /
threads estimates dedicated cores).
Must not import FastAPI, Celery or the CLI.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from segloop.engines.medsam.predictor import MedSAMPredictor
from segloop.engines.medsam.preprocess import image_to_model_input
from segloop.models.sam_v1 import build_sam_model, sam_vit_b_config
from segloop.types import Prompts

__all__ = ["MedSAMBench", "bench_medsam"]


@dataclass(frozen=True)
class MedSAMBench:
    """Benchmark figures (seconds unless stated)."""

    image_size: int
    image: str
    device: str
    threads: int
    preprocess_s: float
    encoder_s: float
    encoder_cpu_s: float
    first_box_s: float
    decoder_ms: float
    decoder_cpu_ms: float
    reference_decoder_ms: float
    reference_decoder_cpu_ms: float
    max_abs_logit_diff: float
    repeated_box_ms: float
    peak_memory_mb: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-able figures."""
        return asdict(self)


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fn`` over ``repeats`` calls."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def _timed_ab(a: Callable[[], Any], b: Callable[[], Any], repeats: int
              ) -> tuple[tuple[float, float], tuple[float, float]]:
    """:func:`_timed` of ``a`` and ``b`` called alternately (so load changes hit both)."""
    runs: tuple[list[tuple[float, float]], list[tuple[float, float]]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((a, runs[0]), (b, runs[1])):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            out.append((time.perf_counter() - t0, time.process_time() - c0))
    ra, rb = ((statistics.median(w for w, _ in r), statistics.median(c for _, c in r)) for r in runs)
    return ra, rb


def bench_medsam(image_size: int = 1024, height: int = 512, width: int = 512, rgb: bool = False,
                 device: str = "cpu", threads: int = 2, repeats: int = 20,
                 encoder_repeats: int = 2) -> MedSAMBench:
    """Run the benchmark (see the module docstring)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_sam_model(sam_vit_b_config(image_size), device=device)
    pred = MedSAMPredictor(model=model, device=torch.device(device), image_size=image_size)
    rng = np.random.default_rng(0)
    shape = (height, width, 3) if rgb else (height, width)
    img = rng.integers(0, 255, shape, dtype=np.uint8)
    box = Prompts(box=(width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    pre_s, _ = _timed(lambda: image_to_model_input(img, image_size), 3)
    x = torch.from_numpy(image_to_model_input(img, image_size))[None].to(device)

    def encode_only() -> None:
        with torch.inference_mode():
            model.get_image_embeddings(x)

    encode_only()  # warm-up
    enc_s, enc_cpu = _timed(encode_only, encoder_repeats)
    t0 = time.perf_counter()
    emb = pred.encode(img)
    pred.predict(emb, box)
    first = time.perf_counter() - t0
    diff = float((pred.logits(emb, box) - pred.reference_logits_and_score(emb, box)[0]).abs().max())
    (dec_s, dec_cpu), (ref_s, ref_cpu) = _timed_ab(
        lambda: pred.logits(emb, box), lambda: pred.reference_logits_and_score(emb, box), repeats)
    rep_s, _ = _timed(lambda: pred.predict(emb, box), repeats)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return MedSAMBench(image_size=image_size, image=f"{width}x{height} {'RGB' if rgb else 'grey'}",
                       device=device, threads=threads, preprocess_s=pre_s, encoder_s=enc_s,
                       encoder_cpu_s=enc_cpu, first_box_s=first, decoder_ms=dec_s * 1000,
                       decoder_cpu_ms=dec_cpu * 1000, reference_decoder_ms=ref_s * 1000,
                       reference_decoder_cpu_ms=ref_cpu * 1000, max_abs_logit_diff=diff,
                       repeated_box_ms=rep_s * 1000,
                       peak_memory_mb=peak)
