"""One checkpoint segloop knows: :class:`ModelSpec` (its source, size, digest, licence, config).

Pure data: must not import torch, transformers, or the registry, store or versions modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from segloop.errors import SegloopError
from segloop.models.hub import hf_endpoint

__all__ = ["ModelSpec"]


@dataclass(frozen=True)
class ModelSpec:
    """One downloadable checkpoint.

    name: registry name (cache folder name). aliases: other names accepted on the command line.
    hf_repo / hf_filename: the Hugging Face repo and file (downloaded from
    ``{endpoint}/{repo}/resolve/{revision}/{file}``); url: a direct URL used instead when set.
    size / sha256: expected bytes and hex digest, or None when not published (then recorded
    on first download and checked from then on). file_format: ``"original"`` (a ``.pt`` with
    ``{"model": state_dict}``). config: ``Sam2VideoConfig`` keyword arguments.
    """

    name: str
    description: str
    config: dict[str, Any]
    licence: str
    hf_repo: str | None = None
    hf_filename: str | None = None
    revision: str = "main"
    url: str | None = None
    size: int | None = None
    sha256: str | None = None
    file_format: str = "original"
    aliases: tuple[str, ...] = ()
    engine: str = "medsam2"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        """Model input size in pixels (square)."""
        v = self.config.get("image_size", 1024)
        return int(v[0] if isinstance(v, list | tuple) else v)

    def source_url(self, endpoint: str | None = None) -> str:
        """The URL the checkpoint is downloaded from (hub endpoint resolved from the environment)."""
        if self.url:
            return self.url
        if not (self.hf_repo and self.hf_filename):
            raise SegloopError(
                f"model {self.name!r} has no download source: import it with"
                f" `segloop models import FILE --as {self.name}`"
            )
        base = (endpoint or hf_endpoint()).rstrip("/")
        return f"{base}/{self.hf_repo}/resolve/{self.revision}/{self.hf_filename}"

    def source_text(self) -> str:
        """Where the checkpoint comes from, for listings."""
        if self.url:
            return self.url
        if self.hf_repo:
            return f"hf://{self.hf_repo}/{self.hf_filename}"
        return "(import only)"
