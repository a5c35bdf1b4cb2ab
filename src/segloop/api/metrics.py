"""Prometheus metrics of one API app (own registry, so several apps can live in one process).

Imports prometheus_client only.
Must not import segloop.cli, segloop.protocols, segloop.worker, segloop.web, segloop.ism,
segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["Metrics"]


class Metrics:
    """HTTP request, task and queue metrics, rendered at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("segloop_http_requests_total", "HTTP requests",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("segloop_http_request_seconds", "HTTP request latency",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.tasks_submitted = Counter("segloop_tasks_submitted_total", "tasks submitted",
                                       ["kind"], registry=self.registry)
        self.tasks_finished = Counter("segloop_tasks_finished_total",
                                      "tasks finished in this process", ["kind", "state"],
                                      registry=self.registry)
        self.task_seconds = Histogram("segloop_task_seconds", "task run time in this process",
                                      ["kind"], registry=self.registry,
                                      buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300))
        self.tasks = Gauge("segloop_tasks", "tasks in the job store by kind and state "
                           "(all workers)", ["kind", "state"], registry=self.registry)
        self.queue = Gauge("segloop_tasks_active", "queued/running tasks in the job store",
                           ["state"], registry=self.registry)

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one HTTP request."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def task_finished(self, info: dict[str, Any], seconds: float) -> None:
        """Record a task end (runtime callback)."""
        kind = str(info.get("kind", "?"))
        self.tasks_finished.labels(kind, str(info.get("state", "?"))).inc()
        self.task_seconds.labels(kind).observe(seconds)

    def set_queue(self, depth: dict[str, int]) -> None:
        """Refresh the queue gauges."""
        for state, n in depth.items():
            self.queue.labels(state).set(n)

    def set_tasks(self, counts: list[tuple[str, str, int]]) -> None:
        """Refresh the per kind/state task gauge."""
        for kind, state, n in counts:
            self.tasks.labels(kind, state).set(n)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
