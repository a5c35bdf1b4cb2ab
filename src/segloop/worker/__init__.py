"""The Celery worker of ``segloop worker``: ``create_worker(settings)`` builds the Celery app.

Never imports the API or the web UI. Engines (and torch) load inside tasks, once per process.
"""

from segloop.worker.app import create_worker

__all__ = ["create_worker"]
