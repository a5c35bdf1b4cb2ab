"""The command line that ``error_parts.py`` and ``click_regions.py`` share: a manifest of cases,
the folder its paths are relative to, a case filter, the number of simulated clicks and the
classic engine's options (``--opt NAME=VALUE``)."""

from __future__ import annotations

import argparse

from segloop.datastore.manifest import Case, read_manifest
from segloop.engines import get_engine
from segloop.engines.base import Engine

__all__ = ["add_case_args", "engine_and_cases"]


def add_case_args(ap: argparse.ArgumentParser) -> None:
    """Add ``manifest``, ``--root``, ``--only``, ``--clicks`` (default 5) and ``--opt``."""
    ap.add_argument("manifest")
    ap.add_argument("--root", default=None, help="folder the manifest's paths are relative to")
    ap.add_argument("--only", default="", help="run only cases whose id contains this text")
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--opt", action="append", default=[], metavar="NAME=VALUE",
                    help="an engine option (repeatable), e.g. --opt drop_detached=none")


def engine_and_cases(args: argparse.Namespace) -> tuple[Engine, list[Case]]:
    """The classic engine with the ``--opt`` options, and the manifest's cases whose id
    contains ``--only``."""
    engine = get_engine("classic", **dict(o.split("=", 1) for o in args.opt))
    cases = [c for c in read_manifest(args.manifest, args.root) if args.only in c.case_id]
    return engine, cases
