"""``segloop export npy MANIFEST --out DIR``: MedSAM's ``imgs/``/``gts/`` npy training layout
from a ``segloop eval`` manifest or the server's datastore (what MedSAM's preprocessing
script does). Owns the terminal; the work is segloop.train.medsam_npy's.
Part of the CLI, the top layer: library code must not import it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from segloop.errors import SegloopError

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``export`` subcommand."""
    p: argparse.ArgumentParser = sub.add_parser("export", help="export training data layouts")
    act = p.add_subparsers(dest="export_command", metavar="WHAT")
    n = act.add_parser("npy", help="MedSAM's npy layout (imgs/*.npy, gts/*.npy) from a manifest")
    n.add_argument("manifest", type=Path, nargs="?", help="segloop eval manifest (CSV)")
    n.add_argument("--datastore", type=Path, help="use the server datastore's manifest instead")
    n.add_argument("--root", type=Path, help="folder the manifest's paths are relative to")
    n.add_argument("--out", type=Path, required=True, help="output folder (gets imgs/ and gts/)")
    n.add_argument("--size", type=int, default=1024, help="image size in px (MedSAM: 1024)")
    n.add_argument("--window", default="auto", help="CT window preset or L,W (default auto)")
    n.set_defaults(func=_npy)

    def _help(_args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=_help)


def _npy(args: argparse.Namespace) -> int:
    from segloop.train.medsam_npy import export_npy
    from segloop.train.sources import datastore_manifest, load_manifest_records

    if (args.manifest is None) == (args.datastore is None):
        raise SegloopError("give a MANIFEST or --datastore DIR (one of them)")
    if args.size <= 0:
        raise SegloopError(f"--size must be positive, got {args.size}")
    manifest = args.manifest if args.manifest is not None else datastore_manifest(args.datastore)
    records = load_manifest_records(manifest, args.root, args.window)
    n = export_npy(records, args.out, size=args.size)
    print(f"segloop: wrote {n} slice(s) of {len(records)} case(s) to {args.out}/imgs and"
          f" {args.out}/gts", file=sys.stderr)
    return 0
