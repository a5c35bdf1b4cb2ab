"""``segloop serve``: the API (and, by default, its embedded workers) on 127.0.0.1:8000.

Binds its listening sockets itself (``segloop.listen``) and decides from the addresses actually
bound whether API keys are needed: any non-loopback address (``--host ""``, ``0.0.0.0``, ``::``,
a public name) needs them, and the server refuses to start when none exist
(``segloop users add``). Imports FastAPI/uvicorn only when the command runs.
Part of the CLI, the top layer: library code must not import it.
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
    from segloop.cli.logs import configure_logging
    from segloop.config import load_settings
    from segloop.jobs.store import JobStore
    from segloop.listen import close_listeners, open_listeners

    settings = load_settings(args.config, host=args.host, port=args.port, queue=args.queue,
                             workers=args.workers, database_url=args.database_url,
                             redis_url=args.redis_url, home=args.home)
    listeners = open_listeners(settings.host, settings.port)
    try:
        public = [lst.address for lst in listeners if not lst.loopback]
        if public and settings.require_api_keys is None:
            settings.require_api_keys = True  # what is bound decides, not how host is spelt
        if settings.auth_required:
            store = JobStore(settings)
            try:
                n = store.count_users()
            finally:
                store.close()
            if n == 0:
                where = ", ".join(public) or "loopback (require_api_keys=true)"
                raise SegloopError(
                    f"refusing to serve on host {settings.host!r} (binds {where}) without API "
                    "keys: create one with `segloop users add NAME --role admin`, or bind to "
                    "127.0.0.1"
                )
        configure_logging(settings.log_level, settings.json_logs)
        app = create_app(settings)
        # MONAI Label and nnInteractive clients: adapters over the API's services (a layer above)
        from segloop.protocols import mount as mount_protocols

        mount_protocols(app)
        if getattr(args, "ism", False):
            from segloop.ism.service import mount_ism

            mount_ism(app, settings)
        try:  # the web viewer (a separate leaf) mounts itself when installed
            from segloop import web

            web.mount(app, settings)
        except ImportError:
            pass
    except BaseException:
        close_listeners(listeners)
        raise
    urls = ", ".join(lst.url for lst in listeners)
    print(f"segloop: serving on {urls} (queue={settings.queue}, "
          f"api keys {'required' if settings.auth_required else 'not required'}, "
          f"data in {settings.home})", flush=True)
    # our middleware logs each request (route template, never the query: it may hold a key)
    # loop/http "auto": uvloop and httptools (C) where installed, else asyncio and h11
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None,
                            access_log=False, timeout_graceful_shutdown=5, loop="auto",
                            http="auto")
    uvicorn.Server(config).run(sockets=[lst.sock for lst in listeners])
    return 0
