"""Request models of the API and the response models that are the API's own (pydantic), as
shown in ``/docs``.

Request bodies are strict (``"5"`` is not an int, ``1.0`` not a bool). The records the job
store returns (job, task, job status, version, object, review, cleanup, audit entry) are
their own response models: :mod:`segloop.jobs.records` is their one definition, and the
routes name them directly. The models here describe answers the routes assemble (a submitted
task, host facts, system status, ...); they allow extra keys, so a field a route adds is
passed through (and should be declared here). Must not import routes, engines, torch, the
worker or the web UI.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from .limits import Coord, LabelValue, ObjectId, Point, PointLabel, Version

__all__ = [
    "CancelOut",
    "CleanupRequest",
    "CurrentVersionOut",
    "EnginesOut",
    "GpuOut",
    "HealthOut",
    "HostOut",
    "InitialMaskRequest",
    "MaskVersionOut",
    "ModelOut",
    "ObjectRequest",
    "PropagateRequest",
    "RefineRequest",
    "ReloadOut",
    "ReloadRequest",
    "ReviewRequest",
    "SubmittedOut",
    "SystemStatusOut",
]


# ---------------------------------------------------------------------------- request bodies
#: the plane a prompt is drawn on; its slice index and 2D coordinates follow the plane
AxisName = Literal["axial", "coronal", "sagittal"]
_AXIS_DOC = ("the plane the prompt was drawn on (default axial): coronal slices y with prompt "
             "coordinates [x, z], sagittal slices x with [y, z]; the engine propagates along "
             "that plane's slice axis")


class InitialMaskRequest(BaseModel):
    """A 2D prompt on slice ``slice_index`` of plane ``axis`` (axial by default; canonical
    voxel indices, inclusive box); on a 2D image job, image pixels: x = column, y = row from
    the top-left (slice_index 0)."""

    model_config = ConfigDict(strict=True)  # "5" is not an int, 1.0 not a bool

    axis: AxisName | None = Field(None, description=_AXIS_DOC)

    slice_index: Coord | None = Field(None, description="required for volumes; 0 (the "
                                      "default) on a 2D image or a one-slice volume")
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
    range_axis: AxisName | None = Field(None, description="the plane whose slices first_slice "
                                        "and last_slice count (a range of another plane than "
                                        "the step's is refused)")


class PropagateRequest(BaseModel):
    """Propagate an object from its anchor slice (default: where its initial mask was drawn)."""

    model_config = ConfigDict(strict=True)  # "5" is not an int, 1.0 not a bool

    object_id: ObjectId | None = None
    slice_index: Coord | None = None
    axis: AxisName | None = Field(None, description="the plane of slice_index (default: the "
                                  "plane of the object's initial mask); propagation runs along "
                                  "its slice axis")
    engine: str | None = None
    first_slice: Coord | None = Field(None, description="the object stays on slices >= this "
                                      "(stops a leak; the range applies when the task ends)")
    last_slice: Coord | None = Field(None, description="the object stays on slices <= this")
    range_axis: AxisName | None = Field(None, description="the plane whose slices first_slice "
                                        "and last_slice count (a range of another plane than "
                                        "the step's is refused)")


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


class SubmittedOut(_Out):
    """A task just queued, and the event stream that follows it."""

    task_id: str
    job_id: str
    kind: str
    state: str
    events: str = Field(description="SSE URL of this task's progress")


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


class EnginesOut(_Out):
    """The engines a request may name (ENGINE@RUN for fine-tuned runs) and the default."""

    engines: list[str]
    default: str
    #: engines of ``engines`` that cannot run on this server, with the reason (weights missing...)
    unavailable: dict[str, str] = {}


class HealthOut(_Out):
    """Liveness: the service version and queue kind."""

    status: str
    version: str
    queue: str
