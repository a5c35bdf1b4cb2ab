"""The ``classic`` engine on 2D image/mask folders, per kind: Dice/IoU from the box, and clicks.

The product's 2D path as a user meets it: each image is read by ``load_image2d`` (the reader
of ``segloop segment`` and the upload API), prompted with the exact bounding box of its mask
(inclusive, as ``segloop eval --images`` does) through an :class:`Image2DSession` (the jobs
API's 2D session: RGB goes through :func:`segloop.engines.image2d.colour_feature`), and with
``--clicks N`` corrected by up to N simulated clicks placed as
:func:`segloop.eval.protocol.next_click` places them in 3D (the largest error region, its
point farthest from the region's border; the image is the one-slice volume ``(X, Y, 1)``).
Prints one line per image (Dice and IoU after the box and after the last click, the engine's
seconds), then per kind and over all kinds: mean Dice, mean IoU, how many are below Dice 0.5
after the box, the median and largest seconds, and with clicks the mean Dice after each click
(an image whose mask became perfect keeps its Dice) and how many clicks lowered Dice by more
than 0.002. A picture is the one-slice grid, where ``next_click`` takes the error region's
in-plane farthest point. ``--variant NAME:OPT=VALUE,...`` compares
classic option sets in one run (each image read once); ``--csv`` writes the per-image rows.

``ROOT`` holds one folder per kind with ``images/`` and ``masks/`` (same file names), as
``benchmarks/build_dev2d.py`` writes them; a ROOT that itself has ``images/`` and ``masks/``
is one kind. Usage (from the repo root)::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_classic_2d.py /work/dev2d [--clicks 3] \\
        [--kinds polyp,xray_lung] [--variant default: --variant NAME:OPT=VALUE] [--csv OUT.csv]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segloop.engines import get_engine
from segloop.engines.base import Engine
from segloop.engines.image2d_session import Image2DSession
from segloop.eval.metrics import compute_dice, compute_iou
from segloop.eval.protocol import box_from_mask, next_click
from segloop.io.image2d import Image2D, load_image2d
from segloop.train.sources import read_mask_file
from segloop.types import Prompts

__all__ = ["ImageScore", "kinds_of", "main", "run_image"]

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class ImageScore:
    """One image's scores for one variant: Dice/IoU after the box and after each click."""

    kind: str
    name: str
    variant: str
    dice: list[float] = field(default_factory=list)
    iou: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def kinds_of(root: Path) -> dict[str, Path]:
    """``{kind: folder}`` under ``root`` (``root`` itself when it holds images/ and masks/)."""
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return {root.name: root}
    return {d.name: d for d in sorted(root.iterdir())
            if (d / "images").is_dir() and (d / "masks").is_dir()}


def run_image(engine: Engine, image: Image2D, truth: np.ndarray, clicks: int
              ) -> tuple[list[float], list[float], list[float]]:
    """Dice, IoU and engine seconds after the box and after each click (``truth`` ``(H, W)``)."""
    truth_xy = np.ascontiguousarray(truth.T[:, :, None])  # the session's (X, Y, 1) grid
    box = box_from_mask(truth_xy[:, :, 0])
    session = Image2DSession(engine, image)
    t0 = time.perf_counter()
    session.segment_slice(0, Prompts(box=box))
    secs = [time.perf_counter() - t0]
    pred = session.mask()
    dice, iou = [compute_dice(pred, truth_xy)], [compute_iou(pred, truth_xy)]
    for _ in range(clicks):
        click = next_click(pred, truth_xy, (1.0, 1.0, 1.0))
        if click is None:
            break
        t0 = time.perf_counter()
        for _step in session.refine(0, Prompts.make(points=[(click.x, click.y)], labels=[click.label])):
            pass
        secs.append(time.perf_counter() - t0)
        pred = session.mask()
        dice.append(compute_dice(pred, truth_xy))
        iou.append(compute_iou(pred, truth_xy))
    return dice, iou, secs


def _variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, rest = text.partition(":")
    return name, dict(o.split("=", 1) for o in rest.split(",") if o)


def _per_click(rows: list[ImageScore]) -> str:
    """Mean Dice after each click (a finished image keeps its last Dice) and how many
    clicks lowered an image's Dice by more than 0.002."""
    n = max(len(r.dice) for r in rows)
    if n < 2:
        return ""
    means = [np.mean([r.dice[min(k, len(r.dice) - 1)] for r in rows]) for k in range(1, n)]
    lower = sum(b < a - 0.002 for r in rows for a, b in zip(r.dice, r.dice[1:], strict=False))
    return "  per click " + " ".join(f"{m:.3f}" for m in means) + f" (lowered: {lower})"


def _summary(label: str, rows: list[ImageScore]) -> str:
    first = [r.dice[0] for r in rows]
    last = [r.dice[-1] for r in rows]
    secs = [s for r in rows for s in r.seconds]
    return (f"{label:28s} n={len(rows):3d}  box Dice {np.mean(first):.3f} IoU "
            f"{np.mean([r.iou[0] for r in rows]):.3f} (<0.5: {sum(x < 0.5 for x in first):2d})  "
            f"last Dice {np.mean(last):.3f} IoU {np.mean([r.iou[-1] for r in rows]):.3f}  "
            f"s median {statistics.median(secs):.3f} max {max(secs):.3f}" + _per_click(rows))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("root", type=Path, help="folder of kinds (each with images/ and masks/)")
    ap.add_argument("--kinds", default="", help="comma-separated kinds to run (default: all)")
    ap.add_argument("--only", default="", help="run only images whose name contains this text")
    ap.add_argument("--clicks", type=int, default=0, help="simulated corrective clicks after the box")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:OPT=VALUE,...",
                    help="a classic option set to compare (repeatable); 'default:' is the defaults")
    ap.add_argument("--csv", type=Path, default=None, help="write per-image rows here")
    args = ap.parse_args(argv)
    kinds = kinds_of(args.root)
    if args.kinds:
        kinds = {k: v for k, v in kinds.items() if k in set(args.kinds.split(","))}
    if not kinds:
        print(f"no kind folder (images/ + masks/) under {args.root}", file=sys.stderr)
        return 2
    variants = [_variant(v) for v in (args.variant or ["default:"])]
    engines = [(name, get_engine("classic", **opts)) for name, opts in variants]
    results: list[ImageScore] = []
    for kind, folder in kinds.items():
        for ipath in sorted(p for p in (folder / "images").iterdir() if p.suffix.lower() in SUFFIXES):
            if args.only not in ipath.stem:
                continue
            mpaths = [m for m in (folder / "masks").glob(f"{ipath.stem}.*") if m.suffix.lower() in SUFFIXES]
            if not mpaths:
                print(f"{kind}/{ipath.name}: no mask, skipped", file=sys.stderr)
                continue
            image = load_image2d(ipath)
            truth = read_mask_file(mpaths[0])
            if truth.shape != (image.height, image.width) or not truth.any():
                print(f"{kind}/{ipath.name}: mask empty or of another size, skipped", file=sys.stderr)
                continue
            cells = []
            for name, engine in engines:
                dice, iou, secs = run_image(engine, image, truth, args.clicks)
                results.append(ImageScore(kind, ipath.stem, name, dice, iou, secs))
                cells.append(f"{name}: box {dice[0]:.3f}/{iou[0]:.3f}"
                             + (f" -> {dice[-1]:.3f}/{iou[-1]:.3f} ({len(dice) - 1} clicks)"
                                if args.clicks else "") + f" {secs[0]:.3f}s")
            print(f"{kind:12s} {ipath.stem[:40]:40s} " + "  ".join(cells), flush=True)
    print("\nDice/IoU means (box = the truth's bounding box; last = after the clicks)")
    for name, _ in engines:
        mine = [r for r in results if r.variant == name]
        for kind in kinds:
            rows = [r for r in mine if r.kind == kind]
            if rows:
                print(_summary(f"{name} {kind}", rows))
        kind_means = [np.mean([r.dice[0] for r in mine if r.kind == k]) for k in kinds
                      if any(r.kind == k for r in mine)]
        print(_summary(f"{name} ALL images", mine)
              + f"  | mean of kind means: box Dice {np.mean(kind_means):.3f}")
    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["variant", "kind", "image", "box_dice", "box_iou", "last_dice", "last_iou",
                        "clicks", "box_seconds", "click_dice", "max_seconds"])
            for r in results:
                w.writerow([r.variant, r.kind, r.name, f"{r.dice[0]:.4f}", f"{r.iou[0]:.4f}",
                            f"{r.dice[-1]:.4f}", f"{r.iou[-1]:.4f}", len(r.dice) - 1,
                            f"{r.seconds[0]:.4f}", " ".join(f"{d:.4f}" for d in r.dice[1:]),
                            f"{max(r.seconds):.4f}"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
