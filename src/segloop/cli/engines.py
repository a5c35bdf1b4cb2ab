"""``segloop engines``: list the registered engines and whether each can run here.

Part of the CLI, the top layer: library code must not import it.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    """Add the ``engines`` subcommand."""
    p: argparse.ArgumentParser = sub.add_parser("engines", help="list segmentation engines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print one line per engine: name, availability, whether it applies the CT window,
    description."""
    from segloop.engines.base import applies_window
    from segloop.engines.registry import engine_class, engine_names, resolve_auto

    auto = resolve_auto()
    for name in engine_names():
        cls = engine_class(name)
        reason = cls.unavailable_reason()
        state = "ready" if reason is None else f"unavailable: {reason}"
        mark = " (auto)" if name == auto else ""
        window = "CT window applied" if applies_window(cls) else "ignores --window"
        print(f"{name}{mark}\t{state}\t{window}\t{getattr(cls, 'description', '')}")
    return 0
