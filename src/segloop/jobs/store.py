"""Job-store operations behind every API route and worker task: users, jobs, objects, tasks, versions.

The API routes call these methods and nothing else that touches state; the task runner
(segloop.jobs.runner) uses the task and version methods. Access rules live here, so both the
API and the CLI enforce the same ones: annotators see only their own jobs; reviewers and
admins see all; review, cleanup, model reload and deleting others' work need reviewer or
admin. Imports SQLAlchemy, numpy and segloop.io; never torch, FastAPI or Celery.

Performance: the per-task hot path (create a task, read it for the event stream, claim it
with everything the run needs, store its version and finish it) uses SQLAlchemy Core
statements, one short transaction each, instead of ORM sessions: every task costs a handful
of small statements and no object bookkeeping.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.ism, segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

from segloop.jobs.records import (
    LOCAL_ADMIN,
    PALETTE,
    ROLES,
    TASK_KINDS,
    TERMINAL,
    Claim,
    ClaimOutcome,
    Principal,
    TaskRecord,
    hash_key,
    require_reviewer,
    task_dict,
)
from segloop.jobs.store_review import ReviewStore

__all__ = [
    "LOCAL_ADMIN",
    "PALETTE",
    "ROLES",
    "TASK_KINDS",
    "TERMINAL",
    "Claim",
    "ClaimOutcome",
    "JobStore",
    "Principal",
    "TaskRecord",
    "hash_key",
    "require_reviewer",
    "task_dict",
]


class JobStore(ReviewStore):
    """All persistent state of the service: a database plus the job folders under ``home``.

    Assembled from one part per concern, each built on the one below: access and users
    (store_access), jobs and objects (store_jobs), tasks (store_tasks), versions
    (store_versions), review and cleanup (store_review).
    """
