"""The ISM pipeline: proposals → descriptors → SAM-6D scores → NMS, with per-object caches.

:class:`IsmPipeline` holds the backends (created on first use, then kept) and, per
(template_dir, cad_path, backend), the loaded templates and their descriptors. :meth:`run` is not
thread-safe on its own: the service calls it under one lock (see ``service``). Imports numpy and
segloop.ism; the ``sam`` backend (torch) is imported only when a request asks for it.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from segloop.errors import ModelNotAvailableError

from .classic import ClassicBackend
from .scoring import ScoreConfig, filter_small, nms, score_proposals
from .templates import load_templates
from .types import BackendName, Descriptors, Detection, Proposals, Scene, Templates, Timings

__all__ = ["Backend", "IsmPipeline", "IsmResult"]

log = logging.getLogger("segloop.ism.pipeline")


class Backend(Protocol):
    """Proposal generator + descriptor model (classic; SAM + DINOv2)."""

    def proposals(self, scene: Scene, stability_score_thresh: float) -> Proposals: ...
    def describe_templates(self, templates: Templates) -> Descriptors: ...
    def describe_proposals(self, scene: Scene, proposals: Proposals) -> Descriptors: ...


@dataclass(frozen=True)
class IsmResult:
    """Detections sorted best first, the stage timings and the template folder used."""

    detections: list[Detection]
    timings: Timings
    template_dir: Path
    cad_path: Path
    n_proposals: int


class IsmPipeline:
    """Backends and template caches of one service process."""

    def __init__(self, config: ScoreConfig | None = None, checkpoints_dir: Path | None = None,
                 sam2_model: str = "sam2.1-large") -> None:
        self.config = config or ScoreConfig()
        self.checkpoints_dir = checkpoints_dir
        self.sam2_model = sam2_model
        self._backends: dict[BackendName, Backend] = {}
        self._templates: dict[tuple[str, str], Templates] = {}
        self._descriptors: dict[tuple[str, str, BackendName], Descriptors] = {}

    def add_backend(self, name: BackendName, backend: Backend) -> None:
        """Use ``backend`` for ``name`` (e.g. a SamBackend built from given models)."""
        self._backends[name] = backend

    def backend(self, name: BackendName) -> Backend:
        """The backend ``name``, created once."""
        if name not in self._backends:
            if name is BackendName.CLASSIC:
                self._backends[name] = ClassicBackend()
            elif name is BackendName.SAM:
                try:
                    from .sam_backend import load_backend
                except ImportError as exc:
                    raise ModelNotAvailableError(
                        f"segmentor_model 'sam' needs torch and transformers ({exc}): install "
                        "segloop[sam2], or use segmentor_model 'classic'") from None
                try:
                    self._backends[name] = load_backend(self.checkpoints_dir)
                except ModelNotAvailableError as exc:
                    raise ModelNotAvailableError(
                        f"{exc}; or use segmentor_model 'classic' (weights-free)") from None
            elif name is BackendName.SAM2:
                try:
                    from .sam2_backend import load_sam2_backend
                except ImportError as exc:
                    raise ModelNotAvailableError(
                        f"segmentor_model 'sam2' needs torch and transformers ({exc}): install "
                        "segloop[sam2], or use segmentor_model 'classic'") from None
                try:
                    self._backends[name] = load_sam2_backend(self.checkpoints_dir, self.sam2_model)
                except ModelNotAvailableError as exc:
                    raise ModelNotAvailableError(
                        f"{exc}; or use segmentor_model 'classic' (weights-free)") from None
            else:
                raise ModelNotAvailableError(
                    "segmentor_model 'fastsam' is not available in segloop: FastSAM runs on ultralytics, "
                    "which needs torchvision (not installable beside segloop's torch); use 'sam', "
                    "'sam2' or 'classic'")
        return self._backends[name]

    def templates(self, template_dir: Path, cad_path: Path) -> Templates:
        """Templates of the object (loaded or rendered once per folder and CAD file)."""
        key = (str(template_dir), str(cad_path))
        if key not in self._templates:
            self._templates[key] = load_templates(template_dir, cad_path)
        return self._templates[key]

    def cached(self) -> list[tuple[str, str]]:
        """(template_dir, cad_path) pairs loaded so far."""
        return list(self._templates)

    def run(self, scene: Scene, backend_name: BackendName, template_dir: Path, cad_path: Path,
            stability_score_thresh: float = 0.97) -> IsmResult:
        """Detect the object of ``cad_path`` in ``scene``; detections best first."""
        backend = self.backend(backend_name)
        tpl = self.templates(template_dir, cad_path)
        key = (str(template_dir), str(cad_path), backend_name)
        t = Timings()
        t0 = time.perf_counter()
        if key not in self._descriptors:
            self._descriptors[key] = backend.describe_templates(tpl)
            t.extra["templates"] = time.perf_counter() - t0
        ref = self._descriptors[key]
        t0 = time.perf_counter()
        props = backend.proposals(scene, stability_score_thresh)
        props = props.subset(filter_small(props, self.config)) if len(props) else props
        t.proposals = time.perf_counter() - t0
        t0 = time.perf_counter()
        query = backend.describe_proposals(scene, props)
        t.descriptors = time.perf_counter() - t0
        t0 = time.perf_counter()
        dets: list[Detection] = []
        if len(props):
            s = score_proposals(scene, props, query, ref, tpl, self.config)
            final = s.final
            boxes = props.boxes[s.index]
            for j in nms(boxes, final, self.config.nms_thresh):
                i = int(s.index[j])
                b = props.boxes[i]
                dets.append(Detection(
                    mask=props.masks[i], box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                    score=float(np.clip(final[j], 0.0, 1.0)), semantic=float(s.semantic[j]),
                    appearance=float(s.appearance[j]), geometric=float(s.geometric[j]),
                    visible_ratio=float(s.visible_ratio[j]), template=int(s.template[j])))
        t.scoring = time.perf_counter() - t0
        log.info("ism: %d proposals, %d detections in %.2fs", len(props), len(dets), t.total)
        return IsmResult(detections=dets, timings=t, template_dir=template_dir, cad_path=cad_path,
                         n_proposals=len(props))
