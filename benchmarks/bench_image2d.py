"""Speed and accuracy of the ``classic`` engine on 2D images (the goal: < 0.2 s at 1024² RGB).

Synthetic photographs (an elliptic 'polyp' whose colour differs from the 'mucosa' in hue but
hardly in luminance, with noise) and a grey X-ray-like image, each with a box around the
target (and one click in its centre); prints the median wall and CPU time of
``segment_image`` (colour feature + classic
engine on a one-slice volume) and the Dice against the truth.

    PYTHONPATH=src python benchmarks/bench_image2d.py [--size 1024] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from segloop.engines import get_engine
from segloop.engines.image2d import segment_image
from segloop.io.image2d import Image2D, ImageSource
from segloop.types import Prompts


def scene(size: int, rgb: bool, seed: int = 0) -> tuple[Image2D, np.ndarray, tuple[int, int, int, int]]:
    rr, cc = np.mgrid[:size, :size]
    cy, cx, ay, ax = 0.4 * size, 0.55 * size, 0.12 * size, 0.16 * size
    truth = ((cc - cx) / ax) ** 2 + ((rr - cy) / ay) ** 2 <= 1
    rng = np.random.default_rng(seed)
    if rgb:
        img = np.empty((size, size, 3), np.float32)
        img[:] = (170, 120, 150)
        img[truth] = (230, 100, 110)
        img += rng.normal(0, 10, img.shape)
    else:
        img = np.full((size, size), 60.0, np.float32)
        img[truth] = 150.0
        img += rng.normal(0, 12, img.shape)
    pixels = np.clip(img, 0, 255).astype(np.uint8)
    box = (int(cx - ax) - 2, int(cy - ay) - 2, int(cx + ax) + 2, int(cy + ay) + 2)
    return Image2D(pixels=pixels, source=ImageSource.PNG), truth, box


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    engine = get_engine("classic")
    for rgb, use_box in ((True, True), (False, True), (True, False)):
        image, truth, box = scene(args.size, rgb)
        centre = ((box[0] + box[2]) // 2, (box[1] + box[3]) // 2)
        prompts = Prompts(box=box) if use_box else Prompts.make(points=[centre], labels=[1])
        segment_image(engine, image, prompts)  # warm-up (imports, caches)
        wall, cpu = [], []
        mask = None
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            mask = segment_image(engine, image, prompts)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        assert mask is not None
        dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
        kind = "RGB" if rgb else "grey"
        what = f"box {box}" if use_box else f"one click {centre}"
        print(f"classic 2D {args.size}x{args.size} {kind}, {what}: median {statistics.median(wall):.3f} s"
              f" wall, {statistics.median(cpu):.3f} s CPU over {args.repeats} runs; Dice {dice:.3f}")


if __name__ == "__main__":
    main()
