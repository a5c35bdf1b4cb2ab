"""Run the interactive evaluation protocol for every case of a manifest and every engine.

For each case the image is read with :func:`segloop.io.load_volume` and the target mask is put on
the image's canonical grid in physical space (image and label may be stored on different grids);
each engine then runs :func:`segloop.eval.protocol.run_interaction` (box on the key slice,
propagation, up to N simulated clicks; or SAM-Med3D's random clicks) and every step is scored with
:func:`segloop.eval.metrics.compute_scores` (Dice, IoU, NSD at the tolerance, HD95) in mm.

Timing: ``seconds`` is the engine's time for a step as measured by the protocol (step 0: open the
session, segment the key slice, propagate; step k: refine from click k); reading files and
scoring are not included. Memory: see :mod:`segloop.eval.memory` (peak extra RSS per step).

An engine that raises on a case does not stop the run (unless ``fail_fast``): the case is scored
as an empty prediction for that engine and the error is kept in the records. Bad data (a label
with no target voxel, an unreadable image) raises, naming the case.

Imports io, engines and the eval modules; never the CLI, API or worker, never torch.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.ism, segloop.train (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from segloop.datastore.manifest import Case
from segloop.engines.base import Engine
from segloop.engines.registry import get_engine, resolve_auto
from segloop.errors import InputError, SegloopError
from segloop.eval.memory import PeakMemory
from segloop.eval.metrics import DEFAULT_TOLERANCE_MM, compute_scores
from segloop.eval.protocol import ClickProtocol, InteractionRun, box_from_mask, key_slice, run_interaction
from segloop.io import load_label, load_volume
from segloop.io.volume import Volume
from segloop.types import BoolArray

__all__ = [
    "EvalProgress",
    "EvalResult",
    "KeySliceView",
    "StepRecord",
    "evaluate",
    "load_truth",
    "resolve_engines",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalProgress:
    """Progress of :func:`evaluate`: ``done`` of ``total`` steps (cases x engines x (clicks + 1))."""

    engine: str
    case_id: str
    case_index: int
    n_cases: int
    step: int
    done: int
    total: int


@dataclass(frozen=True)
class StepRecord:
    """Scores of one engine on one case after ``click`` corrective clicks (0 = after the box).

    placed: False when the protocol stopped earlier (the prediction was already perfect): the
    scores are then those of the last mask. click_*: the click placed at this step (label 1
    positive, 0 negative; -1 when none). dice/iou/nsd in [0, 1]; hd95 in mm (inf when exactly one
    mask is empty); seconds: engine time of this step; cum_seconds: since the case started;
    peak_mb / gpu_peak_mb: peak extra memory of the step in MiB (GPU NaN when unused);
    key_z, box: the initial prompt on the canonical grid; error: the engine's error, if any.
    """

    engine: str
    case_id: str
    structure: str
    modality: str
    patient_id: str
    click: int
    placed: bool
    click_x: int
    click_y: int
    click_z: int
    click_label: int
    dice: float
    iou: float
    nsd: float
    hd95: float
    seconds: float
    cum_seconds: float
    peak_mb: float
    gpu_peak_mb: float
    truth_voxels: int
    pred_voxels: int
    key_z: int
    box: str
    error: str = ""

    def as_row(self) -> dict[str, Any]:
        """The record as a flat dict (CSV row)."""
        return asdict(self)


@dataclass
class KeySliceView:
    """What an overlay of one case needs: the key slice of image and truth, and each engine's masks.

    image: ``(X, Y)`` float32 intensities of canonical slice ``key_z``; truth: ``(X, Y)`` bool;
    spacing_xy: mm per voxel along x and y; box: ``(x0, y0, x1, y1)`` inclusive;
    predictions: engine -> ``[(X, Y) after the box, (X, Y) after the last click]``.
    """

    case_id: str
    structure: str
    modality: str
    key_z: int
    box: tuple[int, int, int, int]
    image: npt.NDArray[np.float32]
    truth: BoolArray
    spacing_xy: tuple[float, float]
    predictions: dict[str, list[BoolArray]] = field(default_factory=dict)


@dataclass
class EvalResult:
    """Everything :func:`evaluate` measured. records: one per engine, case and click 0..clicks."""

    engines: list[str]
    clicks: int
    tolerance_mm: float
    memory_method: str
    records: list[StepRecord] = field(default_factory=list)
    click_protocol: ClickProtocol = ClickProtocol.SEGLOOP
    views: list[KeySliceView] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def resolve_engines(names: Sequence[str]) -> dict[str, Engine]:
    """Engine instances for the given registry names, in order (duplicates removed).

    ``auto`` stands for the best engine available here (see the registry).

    ``NAME@RUN`` is engine NAME with the fine-tuned model ``NAME@RUN`` (``segloop train``).
    Raises SegloopError for unknown engines, unknown runs or engines that cannot run here.
    """
    out: dict[str, Engine] = {}
    for requested in names:
        name = resolve_auto() if requested == "auto" else requested
        if name in out:
            continue
        out[name] = get_engine(name)  # NAME@RUN: engine NAME with fine-tuned model NAME@RUN
    if not out:
        raise SegloopError("no engine given: name at least one with --engine")
    return out


def load_truth(path: Path, reference: Volume, label_value: int | None) -> BoolArray:
    """The target of a label file as an ``(X, Y, Z)`` bool mask on ``reference.canonical()``'s grid.

    label_value: the target's value, or None for ``label > 0``. The label may be stored on another
    grid of the same physical space: :func:`segloop.io.load_label` samples it at the reference's
    voxel positions in mm (nearest neighbour). Raises InputError when no voxel of the target
    lands on the image.
    """
    truth = load_label(path, reference, "any" if label_value is None else label_value)
    if not truth.any():
        what = "voxel > 0" if label_value is None else f"voxel of value {label_value}"
        raise InputError(
            f"label {path} has no {what} inside the image {reference.source_path} "
            "(wrong label_value, or the label does not overlap the image in physical space)"
        )
    return truth


def _scores_row(
    *,
    engine: str,
    case: Case,
    click: int,
    placed: bool,
    click_xyzl: tuple[int, int, int, int],
    pred: BoolArray,
    truth: BoolArray,
    spacing: tuple[float, float, float],
    tolerance_mm: float,
    seconds: float,
    cum_seconds: float,
    peak_mb: float,
    gpu_peak_mb: float,
    key_z: int,
    box: tuple[int, int, int, int],
    error: str = "",
) -> StepRecord:
    s = compute_scores(pred, truth, spacing, tolerance_mm)
    return StepRecord(
        engine=engine,
        case_id=case.case_id,
        structure=case.structure,
        modality=case.modality or "",
        patient_id=case.patient_id,
        click=click,
        placed=placed,
        click_x=click_xyzl[0],
        click_y=click_xyzl[1],
        click_z=click_xyzl[2],
        click_label=click_xyzl[3],
        dice=s.dice,
        iou=s.iou,
        nsd=s.nsd,
        hd95=s.hd95,
        seconds=seconds,
        cum_seconds=cum_seconds,
        peak_mb=peak_mb,
        gpu_peak_mb=gpu_peak_mb,
        truth_voxels=int(truth.sum()),
        pred_voxels=int(pred.sum()),
        key_z=key_z,
        box=" ".join(str(v) for v in box),
        error=error,
    )


def _records_for_run(
    engine: str,
    case: Case,
    run: InteractionRun,
    truth: BoolArray,
    spacing: tuple[float, float, float],
    clicks: int,
    tolerance_mm: float,
    peaks: list[tuple[float, float]],
) -> list[StepRecord]:
    out = []
    cum = 0.0
    n = len(run.masks)
    for k in range(clicks + 1):
        placed = k < n
        i = min(k, n - 1)
        secs = run.seconds[k] if placed else 0.0
        cum += secs
        c = run.click_of_step(k) if placed else None
        cxyz = (c.x, c.y, c.z, c.label) if c is not None else (-1, -1, -1, -1)
        peak, gpu = peaks[k] if placed and k < len(peaks) else (0.0, math.nan)
        out.append(
            _scores_row(
                engine=engine, case=case, click=k, placed=placed, click_xyzl=cxyz, pred=run.masks[i],
                truth=truth, spacing=spacing, tolerance_mm=tolerance_mm, seconds=secs,
                cum_seconds=cum, peak_mb=peak, gpu_peak_mb=gpu, key_z=run.key_z, box=run.box,
            )
        )
    return out


@dataclass(frozen=True)
class _Progress:
    callback: Callable[[EvalProgress], None] | None
    engine: str
    case_id: str
    case_index: int
    n_cases: int
    base: int
    total: int

    def __call__(self, step: int, done_steps: int) -> None:
        if self.callback is not None:
            self.callback(
                EvalProgress(self.engine, self.case_id, self.case_index, self.n_cases, step,
                             self.base + done_steps, self.total)
            )


def _run_engine(
    name: str,
    engine: Engine,
    case: Case,
    volume: Volume,
    truth: BoolArray,
    view: KeySliceView,
    result: EvalResult,
    probe: PeakMemory,
    *,
    progress: _Progress,
    fail_fast: bool,
) -> None:
    """Run one engine on one case; append its records to ``result`` and its masks to ``view``.

    volume: the case's image, already canonical; truth: ``(X, Y, Z)`` bool on its grid.
    """
    clicks, tol, kz = result.clicks, result.tolerance_mm, view.key_z
    spacing = volume.spacing
    peaks: list[tuple[float, float]] = []

    def on_step(step: int) -> None:
        peaks.append((probe.peak_mb(), probe.gpu_peak_mb()))
        probe.reset()
        progress(step, step + 1)

    probe.reset()
    try:
        run = run_interaction(engine, volume, truth, clicks, on_step=on_step,
                              protocol=result.click_protocol)
    except Exception as exc:
        if fail_fast:
            raise
        msg = f"{type(exc).__name__}: {exc}"
        # reported in the result (and by the CLI at the end); the traceback with --verbose
        log.info("engine %s failed on case %s: %s", name, case.case_id, msg)
        log.debug("traceback of the failure", exc_info=True)
        result.errors.append(f"{name} on {case.case_id}: {msg}")
        empty = np.zeros_like(truth)
        for k in range(clicks + 1):
            result.records.append(
                _scores_row(
                    engine=name, case=case, click=k, placed=False, click_xyzl=(-1, -1, -1, -1),
                    pred=empty, truth=truth, spacing=spacing, tolerance_mm=tol, seconds=0.0,
                    cum_seconds=0.0, peak_mb=0.0, gpu_peak_mb=math.nan, key_z=kz, box=view.box,
                    error=msg,
                )
            )
        view.predictions[name] = [empty[:, :, kz], empty[:, :, kz]]
    else:
        result.records.extend(_records_for_run(name, case, run, truth, spacing, clicks, tol, peaks))
        view.predictions[name] = [run.masks[0][:, :, kz].copy(), run.masks[-1][:, :, kz].copy()]
    progress(clicks, clicks + 1)


def evaluate(
    cases: Sequence[Case],
    engines: Mapping[str, Engine],
    *,
    clicks: int = 5,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    on_progress: Callable[[EvalProgress], None] | None = None,
    fail_fast: bool = False,
    memory_method: str = "auto",
    click_protocol: ClickProtocol = ClickProtocol.SEGLOOP,
) -> EvalResult:
    """Evaluate every engine on every case; see the module docstring for the protocol.

    cases: from :func:`segloop.datastore.manifest.read_manifest`; engines: display name -> engine
    (compared side by side, in this order); clicks: simulated corrective clicks per case (>= 0);
    tolerance_mm: the NSD tolerance; on_progress: called after every step; click_protocol:
    segloop's box-and-clicks protocol or SAM-Med3D's random clicks (:mod:`segloop.eval.protocol`).
    """
    if clicks < 0:
        raise InputError(f"--clicks must be >= 0, got {clicks}")
    if not engines:
        raise SegloopError("no engine given")
    names = list(engines)
    probe = PeakMemory(memory_method)
    result = EvalResult(engines=names, clicks=clicks, tolerance_mm=tolerance_mm,
                        memory_method=probe.method, click_protocol=ClickProtocol(click_protocol))
    total = len(cases) * len(names) * (clicks + 1)
    done = 0
    cache: dict[Path, Volume] = {}
    try:
        for ci, case in enumerate(cases):
            t0 = time.perf_counter()
            try:
                can = cache.get(case.image)
                if can is None:
                    cache.clear()  # keep one image: manifests list the cases of one image together
                    can = cache[case.image] = load_volume(case.image).canonical()
                truth = load_truth(case.label, can, case.label_value)
            except SegloopError as exc:
                raise InputError(f"case {case.case_id}: {exc}") from exc
            spacing = can.spacing
            kz = key_slice(truth)
            view = KeySliceView(
                case_id=case.case_id, structure=case.structure,
                modality=case.modality or (can.modality or ""),
                key_z=kz, box=box_from_mask(truth[:, :, kz]),
                image=np.asarray(can.data[:, :, kz], dtype=np.float32), truth=truth[:, :, kz].copy(),
                spacing_xy=(spacing[0], spacing[1]),
            )
            log.info("case %s loaded in %.2fs (shape %s)", case.case_id, time.perf_counter() - t0, can.shape)
            for name, engine in engines.items():
                _run_engine(
                    name, engine, case, can, truth, view, result, probe,
                    progress=_Progress(on_progress, name, case.case_id, ci, len(cases), done, total),
                    fail_fast=fail_fast,
                )
                done += clicks + 1
            result.views.append(view)
    finally:
        probe.close()
    return result

