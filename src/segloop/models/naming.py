"""The one parser of ``ENGINE@RUN`` model-version names (a fine-tuned run of an engine's model).

Used by the model registry, the engine registry, the CLI and the API alike. Bottom of
``segloop.models``: must not import any segloop module but :mod:`segloop.errors`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from segloop.errors import InputError

__all__ = ["ModelVersion", "parse_model_version", "run_model_name"]

_RUN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class ModelVersion:
    """``ENGINE@RUN``: the run ``run`` fine-tuned from engine ``engine``'s model."""

    engine: str
    run: str

    @property
    def name(self) -> str:
        """The registry name, ``"ENGINE@RUN"``."""
        return f"{self.engine}@{self.run}"


def parse_model_version(text: str) -> ModelVersion | None:
    """``"medsam2@run1"`` -> ``ModelVersion("medsam2", "run1")``; None for a plain name (no
    ``@``, or nothing after it). Splits at the first ``@``."""
    engine, sep, run = text.partition("@")
    if not sep or not run:
        return None
    return ModelVersion(engine, run)


def run_model_name(base_engine: str, run_name: str) -> str:
    """``"medsam2@run1"``: the registry name of a run; InputError for unusable run names."""
    if not _RUN_RE.match(run_name):
        raise InputError(f"run name {run_name!r}: use letters, digits, '.', '_' and '-' (max 100)")
    return ModelVersion(base_engine, run_name).name
