"""Settings of the ISM service, from ``ISM_*`` environment variables (SAM-6D's server names).

``ISM_MODEL_TYPE`` (classic|sam|fastsam: the default backend), ``ISM_STABILITY_THRESHOLD``,
``ISM_TEMPLATE_DIR``, ``ISM_CAD_MODEL_PATH``, ``ISM_CHECKPOINTS_DIR``, ``ISM_SERVER_HOST``,
``ISM_SERVER_PORT`` (8002), ``ISM_LOG_LEVEL``, plus segloop's own: ``ISM_ALLOWED_ROOTS``,
``ISM_CACHE_DIR``, ``ISM_MAX_PIXELS``, ``ISM_REQUIRE_API_KEYS``, ``ISM_FALLBACK_BACKEND``.
Building one does no I/O. Imports pydantic(-settings) and segloop.config only.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from segloop.config import is_loopback

from .types import BackendName

__all__ = ["IsmSettings"]


class IsmSettings(BaseSettings):
    """Settings of ``segloop ism serve``. Client paths must lie under :attr:`roots`."""

    model_config = SettingsConfigDict(env_prefix="ISM_", extra="ignore")

    model_type: BackendName = Field(BackendName.CLASSIC, description="backend of requests naming none")
    stability_threshold: float = Field(0.97, ge=0, le=1, description="SAM's stability-score filter")
    template_dir: Path | None = Field(None, description="default template folder (and an allowed root)")
    cad_model_path: Path | None = Field(None, description="default CAD .ply (its folder is an allowed root)")
    checkpoints_dir: Path | None = Field(None, description="model weights (default: segloop's model cache)")
    sam2_model: str = Field("sam2.1-large", description="registry name of the sam2 backend's SAM 2.1")
    server_host: str = Field("127.0.0.1", description="bind address")
    server_port: int = Field(8002, description="TCP port")
    log_level: str = Field("INFO", description="logging level")
    allowed_roots: list[Path] = Field(default_factory=list, description="more folders clients may name")
    cache_dir: Path = Field(
        default_factory=lambda: Path(os.path.expanduser("~")) / ".segloop" / "ism",
        description="templates rendered for requests that name a CAD file but no template folder")
    max_pixels: int = Field(4096 * 4096, gt=0, description="largest accepted image (pixels)")
    max_request_bytes: int = Field(256 * 1024**2, gt=0, description="largest accepted request body")
    require_api_keys: bool | None = Field(None, description="None: required when not bound to loopback")
    fallback_backend: BackendName | None = Field(
        BackendName.CLASSIC, description="backend used when the requested one has no weights; "
        "empty: answer 503 instead")

    @property
    def auth_required(self) -> bool:
        """Whether requests need an API key (explicit setting, else: not bound to loopback)."""
        if self.require_api_keys is not None:
            return self.require_api_keys
        return not is_loopback(self.server_host)

    @property
    def roots(self) -> list[Path]:
        """Resolved folders under which client-named paths may lie (template dir, CAD folder,
        allowed roots, the render cache)."""
        out = [p for p in self.allowed_roots]
        if self.template_dir is not None:
            out.append(self.template_dir)
        if self.cad_model_path is not None:
            out.append(self.cad_model_path.parent)
        out.append(self.cache_dir)
        return [p.expanduser().resolve() for p in out]
