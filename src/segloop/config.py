"""Service settings (``segloop serve`` / ``segloop worker``), read from the environment and a file.

Every field can be set by an environment variable ``SEGLOOP_<FIELD>`` (e.g. ``SEGLOOP_PORT=9000``)
or in a TOML/JSON config file named by ``SEGLOOP_CONFIG`` or ``--config``; explicit keyword
arguments win over the environment, which wins over the file. ``docs/service.md`` has the
table of fields. Building a :class:`Settings` object does no I/O besides reading that file;
:meth:`Settings.ensure_dirs` creates the data directory. Imports only pydantic(-settings) and
the standard library; never torch, FastAPI or Celery.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from segloop.errors import InputError
from segloop.listen import is_loopback

__all__ = ["Settings", "is_loopback", "load_settings"]


class Settings(BaseSettings):
    """Settings of the segloop service. Paths are absolute after validation; sizes in bytes."""

    model_config = SettingsConfigDict(env_prefix="SEGLOOP_", extra="ignore")

    home: Path = Field(
        default_factory=lambda: Path(os.path.expanduser("~")) / ".segloop",
        description="data directory: job store (SQLite), uploads, mask versions, datastore",
    )
    host: str = Field("127.0.0.1", description="address the API binds to")
    port: int = Field(8000, description="TCP port of the API")
    queue: Literal["embedded", "celery"] = Field(
        "embedded", description="embedded: in-process thread pool; celery: Redis + `segloop worker`"
    )
    workers: int = Field(2, ge=1, description="embedded queue: number of worker threads "
                         "(per worker process when embedded_processes > 0)")
    embedded_processes: int = Field(
        0, ge=0, le=64, description="embedded queue: run the engines in this many worker "
        "processes (job affinity: a job's tasks always go to the same process); 0: worker "
        "threads inside the API process")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the job store; default sqlite:///<home>/segloop.db"
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Celery broker and event bus")
    max_upload_bytes: int = Field(2 * 1024**3, description="largest accepted upload (bytes)")
    max_voxels: int = Field(1024**3, description="largest accepted volume (voxels, before inflating)")
    max_volume_bytes: int = Field(
        1024**3, gt=0, description="largest accepted volume after decoding (voxels x bytes per "
        "voxel of its stored type), checked from the header before inflating; also the most a "
        ".zip upload may inflate to (plus 64 MiB of file headers)"
    )
    max_zip_entries: int = Field(10_000, ge=1, description="most files in a .zip upload")
    max_json_bytes: int = Field(1024**2, ge=1024, description="largest request body (bytes) on "
                                "every route but the uploads (POST /jobs, PUT /mask)")
    max_points: int = Field(1000, ge=1, description="most click points in one prompt")
    ingest_processes: int = Field(
        1, ge=0, description="child processes that read uploads (0: in the API process's "
        "threads); an upload that exhausts memory then kills a child, not the server"
    )
    require_api_keys: bool | None = Field(
        None, description="None: required unless every address `host` binds is loopback "
        "(\"\", 0.0.0.0 and :: bind every interface)"
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="origins allowed by CORS; empty = CORS closed"
    )
    retention_days: int = Field(30, ge=0, description="cleanup deletes jobs idle for longer")
    audit_retention_days: int = Field(
        365, ge=0, description="cleanup deletes audit entries older than this (0: keep all)"
    )
    tmp_grace_seconds: float = Field(
        3600.0, ge=0, description="start-up and cleanup delete crash leftovers untouched this long"
    )
    default_engine: str = Field("auto", description="engine used when a request names none")
    heartbeat_seconds: float = Field(
        2.0, gt=0, description="how often a running task reports it is alive (and the reapers run)"
    )
    stale_after_seconds: float = Field(
        10.0, gt=0, description="a running task silent this long is considered crashed: a lost "
        "worker's task is running again within about this plus heartbeat_seconds"
    )
    max_attempts: int = Field(3, ge=1, description="a crashed task is retried this many times")
    visibility_timeout: int = Field(
        3600, description="Celery/Redis: seconds before an unacknowledged message is redelivered"
    )
    session_cache_size: int = Field(32, ge=1, description="engine sessions kept per worker process")
    session_cache_bytes: int = Field(
        4 * 1024**3, ge=0, description="estimated bytes of engine sessions kept per worker "
        "process (least recently used evicted first; the newest session is always kept)"
    )
    plugins: list[str] = Field(
        default_factory=list, description="modules imported at start (e.g. to register engines)"
    )
    protocol_max_leases: int = Field(
        4, ge=1, description="nnInteractive protocol: leases held at once (more get 503)"
    )
    protocol_idle_seconds: float = Field(
        600.0, gt=0, description="nnInteractive lease / MONAI Label session: ends after this idle time"
    )
    protocol_liveness_seconds: float = Field(
        60.0, gt=0, description="nnInteractive lease: ends when no heartbeat came for this long"
    )
    dicomweb_url: str | None = Field(
        None, description="MONAI Label protocol: DICOMweb root (QIDO/WADO/STOW, e.g. Orthanc's "
        "http://127.0.0.1:8042/dicom-web) whose series are datastore images by "
        "SeriesInstanceUID; final labels go back to it as DICOM-SEG. None: off"
    )
    dicomweb_user: str | None = Field(None, description="DICOMweb: HTTP basic auth user")
    dicomweb_password: str | None = Field(None, description="DICOMweb: HTTP basic auth password")
    dicomweb_modalities: list[str] = Field(
        default_factory=lambda: ["CT", "MR"], description="DICOMweb: the modalities of the "
        "series offered as datastore images"
    )
    json_logs: bool = Field(True, description="log one JSON object per line")
    log_level: str = Field("INFO", description="logging level of serve/worker")

    @property
    def db_url(self) -> str:
        """The job store URL (SQLite file under ``home`` unless ``database_url`` is set)."""
        return self.database_url or f"sqlite:///{self.home / 'segloop.db'}"

    @property
    def auth_required(self) -> bool:
        """Whether requests need an API key (explicit setting, else: some address ``host``
        binds is not loopback; a name is resolved once, see segloop.listen)."""
        if self.require_api_keys is not None:
            return self.require_api_keys
        return not is_loopback(self.host)

    @property
    def jobs_dir(self) -> Path:
        """``<home>/jobs``: one folder per job (source, canonical volume, mask versions)."""
        return self.home / "jobs"

    @property
    def datastore_dir(self) -> Path:
        """``<home>/datastore``: reviewed masks for training (see docs/service.md)."""
        return self.home / "datastore"

    @property
    def tmp_dir(self) -> Path:
        """``<home>/tmp``: uploads in flight (same filesystem, so renames are atomic)."""
        return self.home / "tmp"

    def ensure_dirs(self) -> None:
        """Create the data directory layout."""
        for d in (self.home, self.jobs_dir, self.datastore_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        if path.suffix == ".json":
            data: Any = json.loads(text)
        else:
            data = tomllib.loads(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"config file {path} is not valid TOML/JSON: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("segloop"), dict):
        data = data["segloop"]
    if not isinstance(data, dict):
        raise InputError(f"config file {path} must hold a table of settings")
    return data


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from (lowest to highest priority) a config file, the environment, ``overrides``.

    ``config_file`` defaults to ``$SEGLOOP_CONFIG``; TOML (optionally under a ``[segloop]``
    table) or JSON. Overrides whose value is None are ignored (handy for CLI flags).
    """
    path = config_file or os.environ.get("SEGLOOP_CONFIG")
    file_values = _read_config_file(Path(path)) if path else {}
    env_names = {k[len("SEGLOOP_"):].lower() for k in os.environ if k.startswith("SEGLOOP_")}
    values = {k: v for k, v in file_values.items() if k not in env_names}
    values.update({k: v for k, v in overrides.items() if v is not None})
    settings = Settings(**values)
    settings.home = settings.home.expanduser().resolve()
    return settings
