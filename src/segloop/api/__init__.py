"""The HTTP API of ``segloop serve`` (FastAPI). Never imports torch, the worker or the web UI.

``create_app(settings)`` builds the application; see segloop.api.app for the routes.
"""

from segloop.api.app import create_app

__all__ = ["create_app"]
