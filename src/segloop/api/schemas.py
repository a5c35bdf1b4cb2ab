"""Request and response models of the API (pydantic), as shown in ``/docs``.

Request bodies are strict (``"5"`` is not an int, ``1.0`` not a bool). Response models
describe what the job store returns; they allow extra keys, so a field the store adds is
passed through (and should be declared here). Must not import routes, engines, torch, the
worker or the web UI.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from .limits import Coord, LabelValue, ObjectId, Point, PointLabel, Version

__all__ = [
    "ActiveTaskOut",
    "AuditEntryOut",
    "CancelOut",
    "CleanupOut",
    "CleanupRequest",
    "CurrentVersionOut",
    "EnginesOut",
    "GpuOut",
    "HealthOut",
    "HostOut",
    "InitialMaskRequest",
    "JobOut",
    "JobStatusOut",
    "MaskVersionOut",
    "ModelOut",
    "ObjectOut",
    "ObjectRequest",
    "PropagateRequest",
    "RefineRequest",
    "ReloadOut",
    "ReloadRequest",
    "ReviewOut",
    "ReviewRequest",
    "SubmittedOut",
    "SystemStatusOut",
    "TaskOut",
    "VersionOut",
]


# ---------------------------------------------------------------------------- request bodies
class InitialMaskRequest(BaseModel):
    """A 2D prompt on axial slice ``slice_index`` (canonical voxel indices, inclusive box)."""

    model_config = ConfigDict(strict=True)  # "5" is not an int, 1.0 not a bool

    slice_index: Coord
    box: list[Coord] | None = Field(None, min_length=4, max_length=4,
                                    description="[x0, y0, x1, y1] inclusive")
    points: list[Point] | None = Field(None, description="[[x, y], ...]")
    point_labels: list[PointLabel] | None = Field(None, description="1 positive, 0 negative")
    object_id: ObjectId | None = None
    engine: str | None = None


class RefineRequest(InitialMaskRequest):
    """A correction on ``slice_index``, re-propagated from there (within the slice range)."""

    first_slice: Coord | None = Field(None, description="the object stays on slices >= this")
    last_slice: Coord | None = Field(None, description="the object stays on slices <= this")


class PropagateRequest(BaseModel):
    """Propagate an object from its anchor slice (default: where its initial mask was drawn)."""

    model_config = ConfigDict(strict=True)  # "5" is not an int, 1.0 not a bool

    object_id: ObjectId | None = None
    slice_index: Coord | None = None
    engine: str | None = None
    first_slice: Coord | None = Field(None, description="the object stays on slices >= this "
                                      "(stops a leak; the range applies when the task ends)")
    last_slice: Coord | None = Field(None, description="the object stays on slices <= this")


class ObjectRequest(BaseModel):
    """Object metadata."""

    model_config = ConfigDict(strict=True)  # "5" is not an int, 1.0 not a bool

    name: str | None = None
    colour: str | None = Field(None, pattern=r"^#[0-9a-fA-F]{6}([0-9a-fA-F]{2})?$")
    label_value: LabelValue | None = None


class ReviewRequest(BaseModel):
    """Which version to mark final (default: the current one)."""

    model_config = ConfigDict(strict=True)  # "5" is not an int, 1.0 not a bool

    version: Version | None = None


class CleanupRequest(BaseModel):
    """Retention run parameters."""

    model_config = ConfigDict(strict=True)  # "5" is not an int, 1.0 not a bool

    older_than_days: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    include_reviewed: bool = False


class ReloadRequest(BaseModel):
    """Switch the default engine (optional) and make every worker reload its models."""

    model_config = ConfigDict(strict=True)  # "5" is not an int, 1.0 not a bool

    engine: str | None = None


# ---------------------------------------------------------------------------- responses
class _Out(BaseModel):
    """A response record: extra keys pass through unchanged."""

    model_config = ConfigDict(extra="allow")


class JobOut(_Out):
    """A job: its upload, grids and current mask version (times are ISO 8601 UTC)."""

    job_id: str
    owner: str
    filename: str
    created: str
    updated: str
    source_format: str
    modality: str | None
    shape: list[int] = Field(description="canonical (RAS) grid, voxels")
    source_shape: list[int] = Field(description="the uploaded grid, voxels")
    spacing: list[float]
    orientation: str
    engine: str | None
    current_version: int
    last_task: str | None


class TaskOut(_Out):
    """A task's state and progress."""

    task_id: str
    job_id: str
    kind: str
    state: str
    stage: str
    progress: float
    slices_done: int
    slices_total: int
    eta_seconds: float | None
    error: str | None
    attempts: int
    version: int | None = Field(description="the mask version it produced")
    params: dict[str, Any]
    created: str
    finished: str | None


class ActiveTaskOut(TaskOut):
    """A queued or running task, with its owner and worker."""

    worker: str | None
    owner: str


class SubmittedOut(_Out):
    """A task just queued, and the event stream that follows it."""

    task_id: str
    job_id: str
    kind: str
    state: str
    events: str = Field(description="SSE URL of this task's progress")


class JobStatusOut(_Out):
    """A job's state: its latest task's state/stage/progress/ETA/error and mask version."""

    job_id: str
    current_version: int
    active_tasks: int
    state: str
    stage: str
    progress: float
    slices_done: int
    slices_total: int
    eta_seconds: float | None
    error: str | None
    task: TaskOut | None


class CancelOut(_Out):
    """How many tasks were asked to stop."""

    cancel_requested: int


class MaskVersionOut(_Out):
    """The version an edited mask was stored as."""

    job_id: str
    version: int


class CurrentVersionOut(_Out):
    """The job's current version after undo/redo."""

    job_id: str
    current_version: int


class VersionOut(_Out):
    """One mask version of a job."""

    version: int
    created: str
    author: str
    source: str
    engine: str | None
    task_id: str | None
    parent: int
    reviewed: bool
    reviewed_by: str | None
    current: bool


class ReviewOut(_Out):
    """A version marked final and where the datastore keeps its copy."""

    job_id: str
    version: int
    reviewed: bool
    datastore_case: str


class ObjectOut(_Out):
    """An object (label) of a job."""

    object_id: int
    name: str
    colour: str
    label_value: int
    anchor_slice: int | None


class HostOut(_Out):
    """The API host's CPUs and memory."""

    cpu_count: int | None
    cpu_percent: float
    load_average: list[float]
    memory_total_bytes: int
    memory_available_bytes: int
    memory_percent: float
    process_rss_bytes: int


class GpuOut(_Out):
    """One NVIDIA GPU of the API host."""

    index: int
    name: str
    memory_total_mib: float
    memory_used_mib: float
    utilization_percent: float


class SystemStatusOut(_Out):
    """Queue and engine state; host, GPU and broker details only for reviewers and admins
    (fields absent from the reduced view are left out, not null)."""

    version: str
    queue: str
    tasks: dict[str, int] = Field(description="queued and running task counts")
    default_engine: str
    host: HostOut | None = None
    gpus: list[GpuOut] | None = None
    broker_queue_length: int | None = None
    broker_error: str | None = None
    worker_threads: int | None = None
    cached_sessions: int | None = None
    cached_session_bytes: int | None = None


class ModelOut(_Out):
    """The default engine, the known engines and the model generation."""

    default_engine: str
    engines: list[str]
    generation: str
    loaded_in_api_process: list[str]


class ReloadOut(_Out):
    """The new model generation after a reload."""

    generation: str
    default_engine: str


class CleanupOut(_Out):
    """What a retention run deleted and kept."""

    deleted: list[str]
    kept_reviewed: list[str]
    older_than_days: int
    leftovers_removed: list[str]
    audit_entries_pruned: int
    vacuumed: bool


class AuditEntryOut(_Out):
    """One audited action."""

    ts: str
    user: str
    action: str
    job_id: str | None
    detail: dict[str, Any]


class EnginesOut(_Out):
    """The engines a request may name (ENGINE@RUN for fine-tuned runs) and the default."""

    engines: list[str]
    default: str


class HealthOut(_Out):
    """Liveness: the service version and queue kind."""

    status: str
    version: str
    queue: str
