"""Optional dependencies: which pip extra provides which module, and the one-line error a
command gives when one is missing.

segloop's base install (``pip install segloop``) reads volumes and serves the API with the
classic engine; the SAM 2 engines, training and benchmarks need the ``sam2`` extra (torch,
transformers), a PostgreSQL job store and Flower the ``service`` extra. A command that reaches
a missing optional module says which and how to install it (:class:`MissingDependencyError`,
exit status 2), never a traceback. Imports only the standard library and segloop.errors.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from segloop.errors import SegloopError

__all__ = [
    "OPTIONAL_MODULES",
    "MissingDependencyError",
    "OptionalModule",
    "missing_dependency",
    "require_database_driver",
    "require_modules",
]

TORCH_HINT = "install torch first; CPU build: pip install torch==2.13.0"


@dataclass(frozen=True)
class OptionalModule:
    """A top-level module segloop imports only when a feature needs it."""

    module: str
    extra: str
    feature: str
    hint: str = ""

    @property
    def install(self) -> str:
        """The pip command that installs it."""
        return f"pip install 'segloop[{self.extra}]'"


#: top-level module name -> the extra that provides it
OPTIONAL_MODULES: dict[str, OptionalModule] = {m.module: m for m in (
    OptionalModule("torch", "sam2", "the SAM 2 engines, training and benchmarks", TORCH_HINT),
    OptionalModule("transformers", "sam2", "the SAM 2 engines, training and benchmarks",
                   TORCH_HINT),
    OptionalModule("safetensors", "sam2", "model checkpoints (segloop models)"),
    OptionalModule("huggingface_hub", "sam2", "model downloads (segloop models pull)"),
    OptionalModule("psycopg2", "service", "a PostgreSQL job store (database_url postgresql://)"),
    OptionalModule("flower", "service", "Celery monitoring (Flower)"),
    OptionalModule("tensorboard", "train", "TensorBoard training logs"),
)}


class MissingDependencyError(SegloopError):
    """A command needs an optional package that is not installed."""

    exit_code = 2
    http_status = 501

    def __init__(self, module: str, command: str | None = None) -> None:
        self.module = module
        opt = OPTIONAL_MODULES.get(module)
        what = f"`segloop {command}`" if command else "this command"
        if opt is None:
            msg = f"{what} needs the Python package {module!r}, which is not installed"
        else:
            hint = f" ({opt.hint})" if opt.hint else ""
            msg = (f"{what} needs {module} for {opt.feature}, which is not installed: "
                   f"{opt.install}{hint}")
        super().__init__(msg)


def missing_dependency(exc: BaseException, command: str | None = None
                       ) -> MissingDependencyError | None:
    """The one-line error for ``exc`` when it (or an exception it was raised from) is a
    ModuleNotFoundError of an optional module; None for anything else (a real bug stays a
    traceback)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ModuleNotFoundError) and cur.name:
            top = cur.name.split(".", 1)[0]
            if top in OPTIONAL_MODULES:
                return MissingDependencyError(top, command)
        cur = cur.__cause__ or cur.__context__
    return None


def require_modules(*modules: str, command: str | None = None) -> None:
    """MissingDependencyError for the first of ``modules`` that is not installed (checked
    without importing it), so a command fails before doing any work."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise MissingDependencyError(module, command)


def require_database_driver(url: str, command: str | None = None) -> None:
    """MissingDependencyError when the job store URL needs a driver that is not installed
    (``postgresql://`` needs psycopg2, from the ``service`` extra)."""
    if url.startswith("postgresql"):
        require_modules("psycopg2", command=command)
