"""``segloop worker``: a Celery worker running segloop tasks from Redis.

Imports Celery only when the command runs.
Part of the CLI, the top layer: library code must not import it.
"""

from __future__ import annotations

import argparse
import os
import socket
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``worker`` subcommand."""
    p = subparsers.add_parser("worker", help="run a Celery worker (distributed mode)",
                              description="Run segloop tasks sent by `segloop serve --queue "
                              "celery`. Pin a GPU with CUDA_VISIBLE_DEVICES.")
    p.add_argument("--concurrency", "-c", type=int, default=1,
                   help="tasks run at once (threads sharing one model; default 1)")
    p.add_argument("--pool", choices=["threads", "solo", "prefork"], default="threads",
                   help="Celery pool (default threads: one model per process)")
    p.add_argument("--name", help="worker node name (default segloop@HOST-PID)")
    p.add_argument("--redis-url", help="Redis URL")
    p.add_argument("--database-url", help="SQLAlchemy URL of the job store")
    p.add_argument("--config", help="TOML/JSON settings file")
    p.add_argument("--home", help="data directory shared with the API")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Start the Celery worker (blocks)."""
    from segloop.cli.logs import configure_logging
    from segloop.config import load_settings
    from segloop.extras import require_database_driver
    from segloop.worker import create_worker

    settings = load_settings(args.config, redis_url=args.redis_url,
                             database_url=args.database_url, home=args.home, queue="celery")
    require_database_driver(settings.db_url, "worker")  # fail now, not in the first task
    configure_logging(settings.log_level, settings.json_logs)
    app = create_worker(settings)
    name = args.name or f"segloop@{socket.gethostname()}-{os.getpid()}"
    app.worker_main([
        "worker", "-Q", "segloop", "--pool", args.pool, "-c", str(args.concurrency),
        "-n", name, "-l", settings.log_level, "-E", "--without-gossip", "--without-mingle",
    ])
    return 0
