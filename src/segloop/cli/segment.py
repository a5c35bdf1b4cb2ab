"""``segloop segment``: one box (and/or points) on a slice -> a 3D mask on the input's grid.

Owns the terminal for this command (progress bar, messages); the work is done by
segloop.io and the engine protocol.
Part of the CLI, the top layer: library code must not import it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from segloop.errors import PromptError, SegloopError

__all__ = ["parse_engine_options", "register", "run"]

log = logging.getLogger("segloop.cli.segment")


def register(sub: Any) -> None:
    """Add the ``segment`` subcommand to an argparse subparsers object."""
    p: argparse.ArgumentParser = sub.add_parser(
        "segment",
        help="segment a volume from a box and/or points on one slice",
        description=(
            "Segment IMAGE from a box (and/or +/- points) on axial slice Z, propagate through the "
            "volume and write a uint8 mask on the input file's grid. Coordinates are voxel indices "
            "of the closest-canonical RAS array: x along axis 0, y along axis 1, z the axial index; "
            "box bounds inclusive. A 2D image (PNG, JPEG, TIFF, BMP, single-frame DICOM, one-slice "
            "NIfTI/NRRD without --slice) takes --box X0 Y0 X1 Y1 and/or --points X Y LABEL ... "
            "with x = column, y = row from the top-left, and gets a mask of its own size."
        ),
    )
    p.add_argument("image", type=Path, help="NIfTI, NRRD, MHA/MHD, .npz, DICOM folder or .zip;"
                   " or a 2D image: PNG, JPEG, TIFF, BMP, one DICOM file")
    p.add_argument("--box", nargs=4, type=int, metavar=("X0", "Y0", "X1", "Y1"),
                   help="box on slice --slice, inclusive voxel bounds")
    p.add_argument("--slice", type=int, dest="z", metavar="Z",
                   help="axial slice of the box (default: the slice of the first point)")
    p.add_argument("--points", nargs="+", type=int, metavar="X Y Z LABEL",
                   help="points as groups of four numbers: x y z label (1 positive, 0 negative); "
                        "points on other slices are applied as corrections after propagation")
    p.add_argument("--output", "-o", type=Path, required=True, help="output mask (.nii.gz)")
    p.add_argument("--engine", default="auto",
                   help="engine name (see `segloop engines`); auto = best available (default)")
    p.add_argument("--engine-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="engine option, repeatable (e.g. variant=MedSAM2_CTLesion, precision=bf16, "
                        "fill_holes=8); values are parsed as int, float, true/false or text")
    p.add_argument("--no-propagate", action="store_true", help="segment the one slice only (2D)")
    p.add_argument("--dicom-seg", type=Path, metavar="OUT.dcm",
                   help="also write a DICOM-SEG (DICOM input only)")
    p.add_argument("--window", metavar="PRESET",
                   help="CT window for engines that apply one (see `segloop engines`): a preset "
                        "(soft_tissue, abdomen, liver, mediastinum, lung, bone, brain), 'L,W' in "
                        "HU, auto or percentile")
    p.add_argument("--series", metavar="UID", help="pick one series of a multi-series DICOM folder")
    p.add_argument("--max-voxels", type=int, default=None,
                   help="refuse volumes with more voxels than this (checked before reading data)")
    p.add_argument("--compare-with", metavar="ENGINE[@RUN]", default=None,
                   help="2D images: also segment with this engine and write one comparison figure"
                        " (image, both masks) to --output instead of a mask")
    p.add_argument("--labels", action="store_true",
                   help="2D PNG masks hold the label value (1) instead of 255")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or messages")
    p.set_defaults(func=run)


def _parse_points(values: list[int] | None) -> list[tuple[int, int, int, int]]:
    if not values:
        return []
    if len(values) % 4:
        raise PromptError(
            f"--points takes groups of four numbers (x y z label); got {len(values)} number(s)"
        )
    pts = [tuple(values[i : i + 4]) for i in range(0, len(values), 4)]
    for p in pts:
        if p[3] not in (0, 1):
            raise PromptError(f"point {p[:3]} has label {p[3]}: use 1 (positive) or 0 (negative)")
    return pts  # type: ignore[return-value]


def parse_engine_options(items: list[str]) -> dict[str, Any]:
    """``["a=1", "b=x", "c=true"]`` -> ``{"a": 1, "b": "x", "c": True}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SegloopError(f"--engine-opt takes KEY=VALUE, got {item!r}")
        value: Any = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            for conv in (int, float):
                try:
                    value = conv(raw)
                    break
                except ValueError:
                    pass
        out[key.strip().replace("-", "_")] = value
    return out


def run(args: argparse.Namespace) -> int:
    """Handler of ``segloop segment``; returns the exit status."""
    from segloop import io
    from segloop.engines import drive, get_engine
    from segloop.engines.base import applies_window
    from segloop.engines.registry import resolve_auto
    from segloop.io.image2d import ImageSource, image2d_format
    from segloop.io.windowing import check_window
    from segloop.types import Prompts

    kind = image2d_format(args.image)
    volume_like = kind in (ImageSource.NIFTI, ImageSource.NRRD, ImageSource.MHA)
    if kind is not None and not (volume_like and args.z is not None):
        from segloop.cli.segment2d import run_2d

        return run_2d(args)
    if args.compare_with is not None:
        raise PromptError("--compare-with works on 2D images (PNG, JPEG, TIFF, BMP, one DICOM file)")
    points = _parse_points(args.points)
    if args.box is None and not points:
        raise PromptError("give a box (--box X0 Y0 X1 Y1 --slice Z) or points (--points X Y Z LABEL)")
    z = args.z
    if z is None:
        if args.box is not None:
            raise PromptError("--box needs --slice Z (the axial slice the box is drawn on)")
        z = points[0][2]
    window = check_window(args.window)  # the one validation (io.windowing), before reading

    kwargs: dict[str, Any] = {"series_uid": args.series}
    if args.max_voxels is not None:
        kwargs["max_voxels"] = args.max_voxels
    volume = io.load_volume(args.image, **kwargs)
    if window is not None:
        volume = replace(volume, meta={**volume.meta, "window": window})
    canonical = volume.canonical()

    name = resolve_auto() if args.engine == "auto" else args.engine
    if args.engine == "auto" and not args.quiet:
        print(f"segloop: engine auto -> {name}", file=sys.stderr)
    try:
        engine = get_engine(name, **parse_engine_options(args.engine_opt))
    except TypeError as exc:  # an option the engine does not take
        raise SegloopError(f"engine {name!r} does not accept these options: {exc}") from None
    if window is not None and not applies_window(engine):
        log.warning("engine %s ignores the CT window %r", name, window)
        if not args.quiet:
            print(f"segloop: warning: engine {name} ignores --window {window} (it works on raw "
                  "intensities; see `segloop engines`)", file=sys.stderr)

    here = [(x, y, lab) for (x, y, pz, lab) in points if pz == z]
    later = [(x, y, pz, lab) for (x, y, pz, lab) in points if pz != z]
    prompts = Prompts.make(
        box=args.box,
        points=[(x, y) for x, y, _ in here] or None,
        labels=[lab for _, _, lab in here] or None,
    )
    session = engine.open(canonical)
    session.segment_slice(z, prompts)

    if not args.no_propagate:
        _run_with_bar(drive, session.propagate(z), "propagate", args.quiet)
        for x, y, pz, lab in later:
            _run_with_bar(drive, session.refine(pz, Prompts.make(points=[(x, y)], labels=[lab])),
                          f"refine z={pz}", args.quiet)
    elif later:
        raise PromptError("--no-propagate works on one slice: all points must lie on --slice")

    mask = session.mask(1).astype(np.uint8)
    out = io.save_mask(mask, volume, args.output)
    if args.dicom_seg is not None:
        io.write_dicom_seg(mask, volume, args.dicom_seg)
    if not args.quiet:
        n = int(mask.sum())
        sx, sy, sz = canonical.spacing
        print(f"segloop: wrote {out} ({n} voxels, {n * sx * sy * sz / 1000:.1f} ml)", file=sys.stderr)
    return 0


def _run_with_bar(drive: Any, results: Any, label: str, quiet: bool) -> None:
    from tqdm import tqdm

    with tqdm(desc=label, unit="slice", disable=quiet, leave=False, file=sys.stderr) as bar:

        def on_progress(res: Any) -> None:
            bar.total = res.total
            bar.update(res.done - bar.n)  # a superseding result of a slice keeps the count

        drive(results, on_progress)
