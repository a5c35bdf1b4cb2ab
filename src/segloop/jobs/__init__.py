"""Job records, mask versions, the queue protocol (embedded | celery) and the task runner.

Layer rule: imports engines/io/types/config only; never torch (engines are imported lazily
while a task runs), never FastAPI.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.ism, segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from segloop.jobs.store import JobStore, Principal

__all__ = ["JobStore", "Principal"]
