"""``segloop eval``: benchmark one or several engines on a manifest with the interactive protocol.

Owns the terminal for this command (progress bar, the summary table); the work is done by
segloop.eval (manifest, runner, report).
Part of the CLI, the top layer: library code must not import it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    """Add the ``eval`` subcommand to an argparse subparsers object."""
    p: argparse.ArgumentParser = sub.add_parser(
        "eval",
        help="evaluate engines on a manifest of labelled volumes (Dice, NSD, HD95 per click)",
        description=(
            "For every case of MANIFEST (CSV: case_id,image,label,label_value,structure,modality"
            "[,patient_id]) and every engine: a box on the axial slice where the target is largest, "
            "propagation, then up to N simulated corrective clicks (or SAM-Med3D's random clicks:"
            " --click-protocol sammed3d). Writes per_click.csv, "
            "summary.md, summary.json, plots and key-slice overlays to --out and prints the "
            "summary table."
        ),
    )
    p.add_argument("manifest", type=Path, nargs="?", default=None,
                   help="CSV manifest (3D mode); or give --images and --masks (2D mode)")
    p.add_argument("--images", type=Path, default=None,
                   help="2D mode: image folder (png/jpg/tif; its val/ sub-folder when present)")
    p.add_argument("--masks", type=Path, default=None,
                   help="2D mode: binary masks with the images' file names; reports mean IoU per model")
    p.add_argument("--device", default="auto", help="2D mode: torch device (auto, cpu, cuda:0)")
    p.add_argument("--root", type=Path, default=None,
                   help="folder the manifest's paths are relative to (default: the manifest's folder)")
    p.add_argument("--out", type=Path, default=Path("reports/eval"),
                   help="report folder (default: reports/eval)")
    p.add_argument("--engine", action="append", dest="engines", metavar="NAME",
                   help="engine to evaluate; repeat to compare several side by side (default: classic)")
    p.add_argument("--clicks", type=int, default=5, metavar="N",
                   help="simulated corrective clicks per case (default: 5)")
    p.add_argument("--click-protocol", choices=["segloop", "sammed3d"], default="segloop",
                   help="segloop: a box on the key slice, then clicks at the most interior voxel of the "
                        "largest error region (default); sammed3d: SAM-Med3D's own validation (a random "
                        "target voxel, then random error voxels, seed 233), comparable with its papers")
    p.add_argument("--tolerance", type=float, default=2.0, metavar="MM",
                   help="NSD tolerance in mm (default: 2)")
    p.add_argument("--cases", nargs="+", metavar="ID", help="evaluate only these case ids")
    p.add_argument("--fail-fast", action="store_true",
                   help="stop at the first engine error instead of scoring the case as empty")
    p.add_argument("--no-overlays", action="store_true", help="skip the per-case overlay PNGs")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``segloop eval``; returns 0, or 1 when an engine failed on some case."""
    from tqdm import tqdm

    from segloop.datastore.manifest import read_manifest
    from segloop.errors import InputError
    from segloop.eval.lowering import LOWER_TOL, lowering_clicks
    from segloop.eval.protocol import ClickProtocol
    from segloop.eval.report import format_summary_table, summarize, write_report
    from segloop.eval.runner import EvalProgress, evaluate, resolve_engines

    if args.images is not None or args.masks is not None:
        return _run_2d(args)
    if args.manifest is None:
        raise InputError("give a MANIFEST.csv (3D) or --images DIR --masks DIR (2D)")
    if args.clicks < 0:
        raise InputError(f"--clicks must be >= 0, got {args.clicks}")
    if not args.tolerance >= 0:
        raise InputError(f"--tolerance must be >= 0 mm, got {args.tolerance}")
    cases = read_manifest(args.manifest, args.root)
    if args.cases:
        known = {c.case_id for c in cases}
        unknown = [c for c in args.cases if c not in known]
        if unknown:
            raise InputError(f"--cases: unknown case id(s) {', '.join(unknown)}; the manifest has "
                             f"{', '.join(sorted(known))}")
        cases = [c for c in cases if c.case_id in set(args.cases)]
    engines = resolve_engines(args.engines or ["classic"])

    total = len(cases) * len(engines) * (args.clicks + 1)
    with tqdm(total=total, desc="eval", unit="step", disable=args.quiet, file=sys.stderr,
              dynamic_ncols=True) as bar:

        def on_progress(p: EvalProgress) -> None:
            bar.set_postfix_str(f"{p.engine} {p.case_id} ({p.case_index + 1}/{p.n_cases})", refresh=False)
            bar.update(max(p.done - bar.n, 0))

        result = evaluate(
            cases, engines, clicks=args.clicks, tolerance_mm=args.tolerance, on_progress=on_progress,
            fail_fast=args.fail_fast, click_protocol=ClickProtocol(args.click_protocol),
        )
    paths = write_report(result, args.out, overlays=not args.no_overlays)
    print(format_summary_table(summarize(result)))
    if args.clicks > 0:
        low = lowering_clicks(result.records)
        print(f"\n{len(low)} click(s) lowered a case's Dice by more than {LOWER_TOL:g}"
              + (" (listed in the report)" if low else ""))
    print(f"\nreport: {paths.markdown} (per-click CSV, plots and overlays in {args.out})")
    if result.errors:
        print(f"segloop: {len(result.errors)} engine failure(s), scored as empty predictions:",
              file=sys.stderr)
        for e in result.errors:
            print(f"  {e}", file=sys.stderr)
        return 1
    return 0


def _run_2d(args: argparse.Namespace) -> int:
    """2D mode: every image prompted with its mask's box; mean IoU/Dice per model side by side,
    one comparison figure per image in OUT/figures, and with two models the polyp workflow's
    base vs fine-tuned lines (the first model is the base)."""
    from argparse import Namespace

    from segloop.cli.train import run_eval2d
    from segloop.errors import InputError

    if args.images is None or args.masks is None or args.manifest is not None:
        raise InputError("2D mode takes --images DIR and --masks DIR (and no manifest)")
    models = args.engines or ["medsam2"]
    args.out.mkdir(parents=True, exist_ok=True)
    return run_eval2d(Namespace(images=args.images, masks=args.masks, models=models,
                                device=args.device, threads=2, csv=args.out / "per_image_2d.csv",
                                quiet=args.quiet, figures=args.out / "figures", compare=True))
