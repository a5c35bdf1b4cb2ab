"""``segloop serve``: the API (and, by default, its embedded workers) on 127.0.0.1:8000.

Refuses to bind a non-loopback address unless API keys exist (``segloop users add``).
Imports FastAPI/uvicorn only when the command runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from segloop.errors import SegloopError

__all__ = ["register"]


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML/JSON settings file (default: $SEGLOOP_CONFIG)")
    p.add_argument("--home", help="data directory (default: $SEGLOOP_HOME or ~/.segloop)")


def register(subparsers: Any) -> None:
    """Add the ``serve`` subcommand."""
    p = subparsers.add_parser("serve", help="run the segloop API server (web viewer, jobs)",
                              description="Start the segloop API. Defaults: 127.0.0.1:8000, "
                              "embedded workers, SQLite job store under SEGLOOP_HOME.")
    p.add_argument("--host", help="bind address (default 127.0.0.1; others need API keys)")
    p.add_argument("--port", type=int, help="TCP port (default 8000)")
    p.add_argument("--queue", choices=["embedded", "celery"], help="where tasks run")
    p.add_argument("--workers", type=int, help="embedded worker threads")
    p.add_argument("--database-url", help="SQLAlchemy URL of the job store")
    p.add_argument("--redis-url", help="Redis URL (celery queue and events)")
    p.add_argument("--ism", action="store_true", help="also serve SAM-6D's ISM under /api/v1/ism/ (ISM_*)")
    _add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Start uvicorn with the app built from the settings."""
    import uvicorn

    from segloop.api import create_app
    from segloop.config import load_settings
    from segloop.jobs.logs import configure_logging
    from segloop.jobs.store import JobStore

    settings = load_settings(args.config, host=args.host, port=args.port, queue=args.queue,
                             workers=args.workers, database_url=args.database_url,
                             redis_url=args.redis_url, home=args.home)
    if settings.auth_required:
        store = JobStore(settings)
        try:
            n = store.count_users()
        finally:
            store.close()
        if n == 0:
            raise SegloopError(
                f"refusing to serve on {settings.host} without API keys: create one with "
                "`segloop users add NAME --role admin`, or bind to 127.0.0.1"
            )
    configure_logging(settings.log_level, settings.json_logs)
    app = create_app(settings)
    if getattr(args, "ism", False):
        from segloop.ism.service import mount_ism

        mount_ism(app, settings)
    try:  # the web viewer (a separate leaf) mounts itself when installed
        from segloop import web

        web.mount(app, settings)
    except ImportError:
        pass
    print(f"segloop: serving on http://{settings.host}:{settings.port} "
          f"(queue={settings.queue}, data in {settings.home})", flush=True)
    # our middleware logs each request (route template, never the query: it may hold a key)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False,
                timeout_graceful_shutdown=5)
    return 0
