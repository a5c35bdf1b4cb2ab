"""``segloop info IMAGE [--series UID]``: what segloop reads from an image, without segmenting.

Prints format, shape, spacing, orientation, modality (and how it was found), value range and
the canonical shape; for a DICOM folder with several series, lists them. Owns the terminal
for this command; the reading is segloop.io's. Must not import torch or any engine.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    """Add the ``info`` subcommand to an argparse subparsers object."""
    p: argparse.ArgumentParser = sub.add_parser(
        "info",
        help="show what segloop reads from an image (format, grid, modality)",
        description="Read IMAGE the way segloop does and print its geometry and modality.",
    )
    p.add_argument("image", type=Path, help="NIfTI, NRRD, MHA/MHD, .npz, DICOM folder or .zip")
    p.add_argument("--series", metavar="UID", help="pick one series of a multi-series DICOM folder")
    p.add_argument(
        "--max-voxels",
        type=int,
        default=None,
        help="refuse volumes with more voxels than this (checked before reading data)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``segloop info``; errors propagate as SegloopError (one line, exit 2)."""
    from segloop.io import DEFAULT_MAX_VOXELS, MultipleSeriesError, load_volume
    from segloop.io.image2d import ImageSource, image2d_format

    if image2d_format(args.image) in (ImageSource.PNG, ImageSource.JPEG, ImageSource.TIFF,
                                      ImageSource.BMP, ImageSource.DICOM):
        from segloop.cli.info2d import run_info_2d

        return run_info_2d(args)
    limit = args.max_voxels if args.max_voxels is not None else DEFAULT_MAX_VOXELS
    try:
        vol = load_volume(args.image, series_uid=args.series, max_voxels=limit)
    except MultipleSeriesError as exc:
        print(f"{args.image}: {len(exc.series)} DICOM series; pick one with --series UID")
        for s in exc.series:
            print(f"  {s.describe()}")
        return 2
    can = vol.canonical()
    lines = [
        ("path", str(args.image)),
        ("format", vol.source_format),
        ("shape", "x".join(str(s) for s in vol.shape) + f" ({vol.data.dtype})"),
        ("spacing", " x ".join(f"{s:.4g}" for s in vol.spacing) + " mm"),
        ("orientation", f"{vol.orientation} (canonical RAS shape {'x'.join(map(str, can.shape))})"),
        ("modality", f"{vol.modality} ({vol.meta.get('modality_source', 'unknown')})"),
        ("values", f"{float(vol.data.min()):.6g} .. {float(vol.data.max()):.6g}"),
        ("origin", " ".join(f"{v:.2f}" for v in vol.affine[:3, 3]) + " mm (RAS)"),
    ]
    if vol.dicom is not None:
        uid = vol.dicom.series_uid or "<blank SeriesInstanceUID>"
        lines.append(("series", f"{uid} ({len(vol.dicom.files)} slices)"))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key:<{width}}  {value}")
    return 0
