"""The ``segment`` task: one object segmented afresh in 3D as one step (one task, one version).

A protocol request that starts an object over -- MONAI Label's ``/infer`` with a new ROI,
nnInteractive's first box of a lease -- is several engine steps: erase the object, a 2D mask
on the key slice, its propagation, a refinement on each other clicked slice. Run as separate
tasks, each costs a queue round trip and a version write (~8 ms of service time apiece on
the API's path), and an undo went back only the last of them. A ``segment`` task runs them in
one engine session call: its params are an initial mask's (``slice_index``, ``box``,
``points``, ``point_labels``, ``object_id``, ``axis``, ``roi``) plus

- ``clear`` (bool, default False): erase the object first (the whole object, ROI or not);
- ``propagate`` (bool, default True): propagate the key slice's mask through the volume;
- ``refine`` (list of ``{"slice_index", "points", "point_labels"}``): later refinements on
  other slices of the same plane, in order;
- ``first_slice`` / ``last_slice``: the slice range of the propagation and refinements.

The version records the ``segment`` op itself; :func:`sub_steps` expands it into the
ordinary steps (``clear``, ``initial-mask``, ``propagate``, ``refine``) the runner applies in
order, at run time and when a fresh worker replays the version, so both reach the identical
mask. :func:`clean_segment` validates the extra params at submission. Imports segloop.types,
errors and the task states only; must not import the store, the runner, FastAPI or torch.
"""

from __future__ import annotations

from typing import Any

from segloop.errors import PromptError
from segloop.jobs.states import TaskKind
from segloop.types import Plane, Prompts, validate_prompts

__all__ = ["CLEAR", "clean_segment", "sub_steps"]

#: the replay op that erases one object (only inside a ``segment`` step)
CLEAR = "clear"

_COMMON = ("object_id", "axis", "roi")
_RANGE = ("first_slice", "last_slice")


def _flag(params: dict[str, Any], key: str, default: bool) -> bool:
    raw = params.get(key, default)
    if raw is None:
        return default
    if not isinstance(raw, bool):
        raise PromptError(f"{key} must be true or false, got {raw!r}")
    return raw


def clean_segment(params: dict[str, Any], shape: tuple[int, ...], plane: Plane
                  ) -> dict[str, Any]:
    """The validated ``clear``, ``propagate`` and ``refine`` params of a ``segment`` task on a
    volume of ``shape`` (X, Y, Z), prompts drawn on ``plane``; PromptError for a bad one."""
    raw = params.get("refine") or []
    if not isinstance(raw, list):
        raise PromptError("refine must be a list of {slice_index, points, point_labels}")
    refine: list[dict[str, Any]] = []
    for r in raw:
        if not isinstance(r, dict) or r.get("slice_index") is None or not r.get("points"):
            raise PromptError("each refine step needs slice_index and points, got "
                              f"{str(r)[:80]}")
        z = int(r["slice_index"])
        prompts = Prompts.make(None, r.get("points"), r.get("point_labels"))
        validate_prompts(z, prompts, shape, plane)
        refine.append({"slice_index": z, "points": prompts.points.tolist(),
                       "point_labels": prompts.labels.tolist()})
    return {"clear": _flag(params, "clear", False),
            "propagate": _flag(params, "propagate", True), "refine": refine}


def sub_steps(op: dict[str, Any]) -> list[dict[str, Any]]:
    """The steps a recorded ``segment`` op stands for, in the order they run.

    The clear erases the whole object (no ROI); every other step carries the op's object,
    plane and ROI, and the propagation and refinements its slice range."""
    common = {k: op[k] for k in _COMMON if op.get(k) is not None}
    ranged = {k: op[k] for k in _RANGE if op.get(k) is not None}
    z = int(op["slice_index"])
    out: list[dict[str, Any]] = []
    if op.get("clear"):
        out.append({"op": CLEAR, "object_id": int(op.get("object_id", 1))})
    out.append({"op": TaskKind.INITIAL_MASK.value, **common, "slice_index": z,
                "box": op.get("box"), "points": op.get("points") or [],
                "point_labels": op.get("point_labels") or []})
    if op.get("propagate", True):
        out.append({"op": TaskKind.PROPAGATE.value, **common, **ranged, "slice_index": z})
    for r in op.get("refine") or []:
        out.append({"op": TaskKind.REFINE.value, **common, **ranged,
                    "slice_index": int(r["slice_index"]), "box": None,
                    "points": r["points"], "point_labels": r["point_labels"]})
    return out
