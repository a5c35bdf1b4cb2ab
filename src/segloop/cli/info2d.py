"""``segloop info IMG`` for a 2D picture or single-frame DICOM: size, colour, dtype, spacing.

Owns the terminal for this case; the reading is segloop.io.image2d's. Must not import torch
or any engine.
"""

from __future__ import annotations

import argparse

__all__ = ["run_info_2d"]


def run_info_2d(args: argparse.Namespace) -> int:
    """Print what segloop reads from a 2D image; errors propagate as SegloopError."""
    from segloop.io.image2d import DEFAULT_MAX_PIXELS, load_image2d

    limit = args.max_voxels if args.max_voxels is not None else DEFAULT_MAX_PIXELS
    img = load_image2d(args.image, max_pixels=limit)
    px = img.pixels
    lines = [
        ("path", str(args.image)),
        ("format", f"{img.source.value} (2D image: x = column, y = row from the top-left)"),
        ("size", f"{img.width} x {img.height} pixels, {'RGB' if img.is_rgb else 'grey'} ({px.dtype})"),
        ("spacing", "unknown" if img.spacing is None
         else f"{img.spacing[0]:.4g} x {img.spacing[1]:.4g} mm (row x column)"),
        ("modality", str(img.modality)),
        ("values", f"{float(px.min()):.6g} .. {float(px.max()):.6g}"
         + (" (MONOCHROME1, inverted)" if img.inverted else "")),
    ]
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key:<{width}}  {value}")
    return 0
