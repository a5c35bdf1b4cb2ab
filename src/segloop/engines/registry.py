"""Engines registered by name through the ``segloop.engines`` entry-point group.

``pyproject.toml`` registers the built-in engines; another package adds one with::

    [project.entry-points."segloop.engines"]
    myengine = "mypkg.engine:MyEngine"

Engine instances are created once per process and cached (weights are loaded once).
Nothing is imported until an engine is asked for by name. Must not import FastAPI, Celery,
jobs, the CLI or torch (an engine imports torch itself, when opened).
"""

from __future__ import annotations

import logging
import threading
from importlib.metadata import entry_points
from typing import Any, cast

from segloop.engines.base import Engine
from segloop.errors import SegloopError
from segloop.models.naming import parse_model_version

__all__ = [
    "clear_engines",
    "engine_catalogue",
    "engine_class",
    "engine_names",
    "engine_unavailable",
    "get_engine",
    "register_engine",
    "resolve_auto",
]

log = logging.getLogger(__name__)
GROUP = "segloop.engines"
_extra: dict[str, type[Any]] = {}
_instances: dict[tuple[str, tuple[tuple[str, Any], ...]], Engine] = {}
_lock = threading.Lock()

#: preference order for ``--engine auto``: first available wins; classic is the fallback
AUTO_ORDER: tuple[str, ...] = ("medsam2", "sam2.1-tiny", "sam2.1-small", "sam2.1-base-plus",
                               "sam2.1-large", "sammed3d", "classic")


def register_engine(name: str, cls: type[Any]) -> None:
    """Register an engine class under ``name`` for this process (tests, plugins without packaging)."""
    _extra[name] = cls


def engine_names() -> list[str]:
    """All registered engine names, sorted."""
    names = {ep.name for ep in entry_points(group=GROUP)} | set(_extra)
    return sorted(names)


def engine_catalogue() -> list[str]:
    """Every engine name a request may give: the registered engines (sorted), then the
    fine-tuned runs cached under ``$SEGLOOP_HOME/models`` as ``ENGINE@RUN`` (sorted) whose
    ENGINE is registered. What ``/api/v1/system/engines`` and ``/system/model`` list."""
    from segloop.models.runs import saved_run_specs

    names = engine_names()
    runs = sorted(sp.name for sp in saved_run_specs()
                  if (v := parse_model_version(sp.name)) is not None and v.engine in names)
    return names + runs


def engine_unavailable(names: list[str]) -> dict[str, str]:
    """For each name of ``names`` (from :func:`engine_catalogue`) that cannot run in this
    process, why not (missing weights or package). ``ENGINE@RUN`` names carry their own model
    and are checked when opened, so they are never listed; an engine whose class cannot even be
    imported is listed with that error."""
    out: dict[str, str] = {}
    for name in names:
        if parse_model_version(name) is not None:
            continue
        try:
            reason = engine_class(name).unavailable_reason()
        except Exception as exc:  # a plugin that cannot be imported cannot run either
            reason = f"cannot be loaded: {exc}"
        if reason is not None:
            out[name] = reason
    return out


def engine_class(name: str) -> type[Engine]:
    """The engine class registered as ``name``; SegloopError listing the known names if none."""
    if name in _extra:
        return cast(type[Engine], _extra[name])
    for ep in entry_points(group=GROUP):
        if ep.name == name:
            return cast(type[Engine], ep.load())
    raise SegloopError(f"unknown engine {name!r}; known engines: {', '.join(engine_names())}")


def resolve_auto() -> str:
    """The name ``auto`` stands for: the first engine of AUTO_ORDER that can run here."""
    known = set(engine_names())
    for name in AUTO_ORDER:
        if name not in known:
            continue
        try:
            reason = engine_class(name).unavailable_reason()
        except Exception as exc:  # a plugin that cannot even be imported is just unavailable
            log.warning("engine %r skipped by auto: %s", name, exc)
            continue
        if reason is None:
            return name
    return "classic"


def get_engine(name: str = "classic", **options: Any) -> Engine:
    """A process-wide engine instance for ``name`` and options.

    ``"auto"`` is resolved (see :func:`resolve_auto`); ``"ENGINE@RUN"`` is engine ENGINE with
    the fine-tuned registry model ``ENGINE@RUN`` (``segloop train``) as its ``model`` option.
    """
    if name == "auto":
        name = resolve_auto()
    if parse_model_version(name) is not None:  # ENGINE@RUN: engine ENGINE with that model
        from segloop.models.versions import resolve_model_version

        name, model = resolve_model_version(name)
        options = {**options, "model": model}
    key = (name, tuple(sorted(options.items())))
    with _lock:
        inst = _instances.get(key)
        if inst is None:
            cls = engine_class(name)
            # with an explicit model the engine itself checks that model's weights
            reason = None if "model" in options else cls.unavailable_reason()
            if reason is not None:
                raise SegloopError(f"engine {name!r} cannot run here: {reason}")
            inst = cls(**options)
            _instances[key] = inst
        return inst


def clear_engines() -> None:
    """Drop every cached engine instance (a model reload: the next get_engine loads again)."""
    with _lock:
        _instances.clear()
