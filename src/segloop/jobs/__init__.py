"""Job records, mask versions, the queue protocol (embedded | celery) and the task runner.

Layer rule: imports engines/io/types/config only; never torch (engines are imported lazily
while a task runs), never FastAPI.
"""

from segloop.jobs.store import JobStore, Principal

__all__ = ["JobStore", "Principal"]
