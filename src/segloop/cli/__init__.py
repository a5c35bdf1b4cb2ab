"""The ``segloop`` command. Each subcommand lives in its own module exposing
``register(subparsers)``; this module only assembles them and turns SegloopError (and a
missing optional package, see segloop.extras) into a one-line message and a non-zero exit.
Nothing heavy is imported until a subcommand runs.
Part of the CLI, the top layer: library code must not import it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from segloop import __version__
from segloop.errors import SegloopError
from segloop.extras import missing_dependency

__all__ = ["main"]

#: subcommand modules, in help order; each defines ``register(subparsers) -> None``
SUBCOMMANDS: tuple[str, ...] = ("segment", "eval", "info", "engines", "serve", "worker",
                                 "users", "models", "bench", "train", "ism", "export")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="segloop", description="Human-in-the-loop 3D medical image segmentation."
    )
    parser.add_argument("--version", action="version", version=f"segloop {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        mod = importlib.import_module(f"segloop.cli.{name.replace('-', '_')}")
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``segloop`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from segloop.cli.train_sammed3d import is_sammed3d_train

    if is_sammed3d_train(argv):  # SAM-Med3D fine-tuning has the seed project's own options
        from segloop.cli.train_sammed3d import main as train_sammed3d

        return train_sammed3d(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except SegloopError as exc:
        print(f"segloop: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("segloop: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an optional package (torch, psycopg2...) that is not installed
        missing = missing_dependency(exc, args.command)
        if missing is None:
            raise
        print(f"segloop: error: {missing}", file=sys.stderr)
        return missing.exit_code
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
