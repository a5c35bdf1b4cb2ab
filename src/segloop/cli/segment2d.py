"""``segloop segment`` on a 2D image (PNG, JPEG, TIFF, BMP, single-frame DICOM, one-slice
NIfTI/NRRD): a box and/or ± points -> a mask of exactly the input's size.

Coordinates are those of every image tool: ``x`` = column, ``y`` = row, pixels from the
top-left; ``--points`` come in groups of three (x y label). Owns the terminal for this
command; the work is done by segloop.io.image2d and segloop.engines.image2d.
Part of the CLI, the top layer: library code must not import it.
"""

from __future__ import annotations

import argparse
import sys

from segloop.errors import PromptError, SegloopError

__all__ = ["parse_points_2d", "run_2d"]


def parse_points_2d(values: list[int] | None) -> list[tuple[int, int, int]]:
    """``[x, y, label, ...]`` -> ``[(x, y, label), ...]`` with labels 0/1 checked."""
    if not values:
        return []
    if len(values) % 3:
        raise PromptError(
            f"on a 2D image --points takes groups of three numbers (x y label); got {len(values)}"
            " number(s)"
        )
    pts = [(values[i], values[i + 1], values[i + 2]) for i in range(0, len(values), 3)]
    for x, y, lab in pts:
        if lab not in (0, 1):
            raise PromptError(f"point ({x}, {y}) has label {lab}: use 1 (positive) or 0 (negative)")
    return pts


def run_2d(args: argparse.Namespace) -> int:
    """Handler of ``segloop segment`` for 2D images; returns the exit status."""
    from segloop.cli.segment import parse_engine_options
    from segloop.engines import get_engine
    from segloop.engines.image2d import segment_image
    from segloop.engines.registry import resolve_auto
    from segloop.io.image2d import DEFAULT_MAX_PIXELS, load_image2d
    from segloop.io.image2d_write import save_mask_2d, write_dicom_seg_2d
    from segloop.types import Prompts

    if args.z is not None:
        raise PromptError("a 2D image has no slices: drop --slice (x = column, y = row)")
    if args.series is not None:
        raise PromptError("--series applies to DICOM series folders, not to one 2D image")
    points = parse_points_2d(args.points)
    if args.box is None and not points:
        raise PromptError("give a box (--box X0 Y0 X1 Y1) or points (--points X Y LABEL ...)")
    max_pixels = args.max_voxels if args.max_voxels is not None else DEFAULT_MAX_PIXELS
    image = load_image2d(args.image, max_pixels=max_pixels)
    if args.dicom_seg is not None and image.source.value != "dicom":
        raise SegloopError(f"--dicom-seg needs DICOM input, but {args.image} is"
                           f" {image.source.value.upper()}")
    prompts = Prompts.make(
        box=args.box,
        points=[(x, y) for x, y, _ in points] or None,
        labels=[lab for _, _, lab in points] or None,
    )
    name = resolve_auto() if args.engine == "auto" else args.engine
    if args.engine == "auto" and not args.quiet:
        print(f"segloop: engine auto -> {name}", file=sys.stderr)
    try:
        engine = get_engine(name, **parse_engine_options(args.engine_opt))
    except TypeError as exc:
        raise SegloopError(f"engine {name!r} does not accept these options: {exc}") from None
    if getattr(args, "compare_with", None):
        from segloop.cli.compare2d import write_comparison
        from segloop.engines.image2d import segment_image_scored

        other = get_engine(args.compare_with, **parse_engine_options(args.engine_opt))
        mask_a, score_a = segment_image_scored(engine, image, prompts)
        mask_b, score_b = segment_image_scored(other, image, prompts)
        out = write_comparison(image, prompts, [(name, mask_a, score_a),
                                                (args.compare_with, mask_b, score_b)],
                               args.output)
        if not args.quiet:
            print(f"segloop: wrote comparison {out}", file=sys.stderr)
        return 0
    mask = segment_image(engine, image, prompts)
    foreground = None if getattr(args, "labels", False) else 255
    out = save_mask_2d(mask, image, args.output, foreground=foreground)
    if args.dicom_seg is not None:
        write_dicom_seg_2d(mask, image, args.dicom_seg)
    if not args.quiet:
        n = int(mask.sum())
        area = ""
        if image.spacing is not None:
            area = f", {n * image.spacing[0] * image.spacing[1] / 100:.2f} cm²"
        print(f"segloop: wrote {out} ({image.width}x{image.height}, {n} pixels{area})",
              file=sys.stderr)
    return 0
