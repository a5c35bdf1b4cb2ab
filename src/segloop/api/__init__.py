"""The HTTP API of ``segloop serve`` (FastAPI). Never imports torch, the worker or the web UI.

``create_app(settings)`` (segloop.api.app) builds the application; the routes are in
``routes_jobs`` and ``routes_system``, their request/response models in ``schemas``.
"""

from segloop.api.app import create_app

__all__ = ["create_app"]
