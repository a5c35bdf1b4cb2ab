"""Segmentation engines: the protocol, the registry and the built-in engines.

Must not import FastAPI, Celery or the CLI. Heavy engines (torch) are imported only when
asked for by name through the registry.
"""

from segloop.engines.base import Engine, Session, drive
from segloop.engines.registry import engine_class, engine_names, get_engine, register_engine

__all__ = ["Engine", "Session", "drive", "engine_class", "engine_names", "get_engine",
           "register_engine"]
