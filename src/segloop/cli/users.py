"""``segloop users add|list|remove``: API users and keys (printed once, stored hashed).

Imports SQLAlchemy (via segloop.jobs) only when the command runs.
Part of the CLI, the top layer: library code must not import it.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def _add_store_options(p: argparse.ArgumentParser, default: Any) -> None:
    """--config/--home/--database-url; on an action ``default=SUPPRESS`` keeps the value given
    before the action when the option is not repeated after it."""
    p.add_argument("--config", default=default, help="TOML/JSON settings file")
    p.add_argument("--home", default=default, help="data directory")
    p.add_argument("--database-url", default=default, help="SQLAlchemy URL of the job store")


def register(subparsers: Any) -> None:
    """Add the ``users`` subcommand."""
    p = subparsers.add_parser("users", help="manage API users and keys")
    _add_store_options(p, None)
    sub = p.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    a = sub.add_parser("add", help="create a user and print its API key (shown once)")
    a.add_argument("name")
    a.add_argument("--role", choices=["annotator", "reviewer", "admin"], default="annotator")
    ls = sub.add_parser("list", help="list users and roles")
    r = sub.add_parser("remove", help="delete a user (their jobs stay)")
    r.add_argument("name")
    for action in (a, ls, r):  # `users add X --home H` as well as `users --home H add X`
        _add_store_options(action, argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run one users action."""
    from segloop.config import load_settings
    from segloop.jobs.store import JobStore

    settings = load_settings(args.config, home=args.home, database_url=args.database_url)
    store = JobStore(settings)
    try:
        if args.users_command == "add":
            key = store.add_user(args.name, args.role)
            print(f"created user {args.name} ({args.role}); API key (shown only once):")
            print(key)
        elif args.users_command == "list":
            for u in store.list_users():
                print(f"{u.name}\t{u.role}\t{u.created}")
        else:
            store.remove_user(args.name)
            print(f"removed user {args.name}")
    finally:
        store.close()
    return 0
