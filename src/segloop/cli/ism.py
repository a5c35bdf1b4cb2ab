"""``segloop ism``: SAM-6D-style instance segmentation of a CAD object in RGB-D images.

``segloop ism render CAD.ply OUT_DIR [--views N]`` writes the object's templates;
``segloop ism serve`` runs the ISM service (port 8002). Imports segloop.ism lazily, when a
subcommand runs; nothing from api/jobs.
Part of the CLI, the top layer: library code must not import it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``ism`` subcommand group."""
    p = subparsers.add_parser("ism", help="instance segmentation of a CAD object in RGB-D (SAM-6D ISM)",
                              description="SAM-6D's Instance Segmentation Model: templates and service.")
    sub = p.add_subparsers(dest="ism_command", metavar="ISM_COMMAND")
    r = sub.add_parser("render", help="render SAM-6D's templates of a CAD model",
                       description="Render rgb_{i}.png, mask_{i}.png, xyz_{i}.npy at SAM-6D's views "
                       "(42 = level 0; 162, 642 for the finer levels).")
    r.add_argument("cad", type=Path, help="CAD model (.ply, e.g. millimetres with vertex colours)")
    r.add_argument("out_dir", type=Path, help="output folder (created)")
    r.add_argument("--views", type=int, default=42, help="number of views: 42, 162 or 642 (default 42)")
    r.set_defaults(func=_render)
    s = sub.add_parser("serve", help="run the ISM service (default 127.0.0.1:8002)",
                       description="Serve POST /api/v1/inference, GET /health, GET /metrics; "
                       "settings from ISM_* (docs/ism.md).")
    s.add_argument("--host", help="bind address (default $ISM_SERVER_HOST or 127.0.0.1)")
    s.add_argument("--port", type=int, help="TCP port (default $ISM_SERVER_PORT or 8002)")
    s.set_defaults(func=_serve)
    p.set_defaults(func=lambda _a: (p.print_help(), 2)[1])


def _render(args: argparse.Namespace) -> int:
    from segloop.errors import InputError
    from segloop.ism.mesh import read_ply
    from segloop.ism.poses import level_for_views
    from segloop.ism.render import render_templates

    try:
        level = level_for_views(args.views)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    mesh = read_ply(args.cad)
    n = render_templates(mesh, args.out_dir, level)
    print(f"segloop: wrote {n} templates to {args.out_dir}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from segloop.ism.service import serve

    return serve(host=args.host, port=args.port)
