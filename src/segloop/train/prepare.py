"""What a run starts from: its resolved configuration and its data, split into training and
validation records (:class:`PreparedData`).

Must not import the training loop, torch, the API, the jobs layer or the CLI (``eval`` only for
manifest reading, through :mod:`segloop.train.data`, until ``segloop.datastore`` owns it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from segloop.errors import InputError, SegloopError
from segloop.train.config import DEFAULT_PARTS_2D, DEFAULT_PARTS_3D, TrainConfig
from segloop.train.records import ImageRecord
from segloop.train.sources import (
    datastore_manifest,
    load_folders,
    load_manifest_records,
    split_records,
)

__all__ = ["PreparedData", "prepare_data", "resolve_config"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedData:
    """A run's records: ``train``, ``val`` and whether validation reuses the training records
    (``val_is_train``: a single patient leaves nothing to hold out)."""

    train: list[ImageRecord]
    val: list[ImageRecord]
    val_is_train: bool = False


def resolve_config(cfg: TrainConfig) -> TrainConfig:
    """Fill defaults that depend on the data source, the model cache and ``smoke``."""
    from segloop.models.registry import get_spec
    from segloop.models.store import is_available
    from segloop.models.versions import register_saved_runs

    cfg.validate()
    register_saved_runs()  # a trained ENGINE@RUN can be the starting point of another run
    if cfg.smoke:
        cfg.epochs = min(cfg.epochs, 2)
        cfg.samples_per_epoch = cfg.samples_per_epoch or 4
        cfg.val_samples = cfg.val_samples or 2
    if cfg.model != "tiny":
        try:
            spec = get_spec(cfg.model)
        except SegloopError:
            if cfg.smoke:
                cfg.model = "tiny"
            else:
                raise
        else:
            if not is_available(spec.name) and cfg.smoke:
                log.warning("no cached weights for %s: --smoke uses a tiny random model", spec.name)
                cfg.model = "tiny"
            else:
                cfg.model = spec.name
                cfg.base_engine = spec.engine
                cfg.image_size = spec.image_size
    if not cfg.parts:
        cfg.parts = [p.value for p in (DEFAULT_PARTS_3D if cfg.is_3d else DEFAULT_PARTS_2D)]
    if cfg.run_name is None:
        cfg.run_name = Path(cfg.out).resolve().name
    return cfg


def prepare_data(cfg: TrainConfig) -> PreparedData:
    """The training and validation records of a config.

    Split by patient (seeded) unless the 2D folders have ``train/`` and ``val/``. With a
    single patient there is nothing to hold out: validation uses the training records.
    """
    if cfg.images is not None and cfg.masks is not None:
        train, val = load_folders(Path(cfg.images), Path(cfg.masks), val_fraction=cfg.val_fraction,
                                  seed=cfg.seed, patient_pattern=cfg.patient_pattern)
    else:
        root: Path | None
        if cfg.datastore is not None:
            manifest, root = datastore_manifest(Path(cfg.datastore)), Path(cfg.datastore)
        else:
            assert cfg.manifest is not None
            manifest = Path(cfg.manifest)
            root = Path(cfg.root) if cfg.root else None
        records = load_manifest_records(manifest, root, cfg.window)
        train, val = split_records(records, cfg.val_fraction, cfg.seed)
    if not train:
        raise InputError("the split left no training data: add data or lower --val-fraction")
    if not val:
        log.warning("only one patient: validating on the training data (no held-out patient)")
        return PreparedData(train, train, val_is_train=True)
    return PreparedData(train, val, val_is_train=False)
