"""A run's log: ``metrics.csv`` (always), TensorBoard, W&B and MLflow (when installed and asked),
and the loss/IoU curves (``curves.png``).

Must not import the training loop, torch at import time, the API, the jobs layer, eval or the CLI.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

from segloop.fsio import atomic_write_text
from segloop.train.config import TrainConfig

__all__ = ["RunLog", "plot_curves"]

log = logging.getLogger(__name__)


class RunLog:
    """metrics.csv always; TensorBoard when installed; W&B / MLflow when installed and asked."""

    def __init__(self, cfg: TrainConfig, run_dir: Path) -> None:
        self.csv_path = run_dir / "metrics.csv"
        self.tb: Any = None
        self.wandb: Any = None
        self.mlflow: Any = None
        self.backends = ["csv"]
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            self.backends.append("tensorboard")
        except ImportError:
            log.info("tensorboard is not installed: scalars go to metrics.csv only")
        if cfg.wandb:
            try:
                import wandb

                self.wandb = wandb.init(project="segloop", name=cfg.run_name, config=cfg.to_dict())
                self.backends.append("wandb")
            except ImportError:
                log.warning("--wandb: the wandb package is not installed; skipped")
        if cfg.mlflow:
            try:
                import mlflow

                mlflow.start_run(run_name=cfg.run_name)
                mlflow.log_params({k: str(v) for k, v in cfg.to_dict().items()})
                self.mlflow = mlflow
                self.backends.append("mlflow")
            except ImportError:
                log.warning("--mlflow: the mlflow package is not installed; skipped")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Scalars of one step to every backend but the CSV (epoch rows go there)."""
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(values, step=step)
        if self.mlflow is not None:
            self.mlflow.log_metrics(values, step=step)

    def epoch_rows(self, history: list[dict[str, Any]]) -> None:
        """Rewrite ``metrics.csv`` with every epoch so far (atomically)."""
        if not history:
            return
        keys = list(history[0])
        out = io.StringIO(newline="")
        w = csv.DictWriter(out, fieldnames=keys)
        w.writeheader()
        for row in history:
            w.writerow({k: row.get(k) for k in keys})
        atomic_write_text(self.csv_path, out.getvalue())

    def close(self) -> None:
        """Close the backends (flushes TensorBoard, ends W&B / MLflow runs)."""
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
        if self.mlflow is not None:
            self.mlflow.end_run()


def plot_curves(history: list[dict[str, Any]], path: Path,
                before: dict[str, float] | None = None) -> None:
    """Loss and IoU per epoch (train and validation; ``before``: the base model's validation
    scores, drawn at epoch 0) as a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5))
    ax1, ax2 = fig.subplots(1, 2)
    ep = [h["epoch"] for h in history]
    ax1.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    v0 = [0] if before else []
    ax1.plot(v0 + ep, ([before["val_loss"]] if before else []) + [h["val_loss"] for h in history],
             "s-", label="validation")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(ep, [h["train_iou"] for h in history], "o-", label="train")
    ax2.plot(v0 + ep, ([before["val_iou"]] if before else []) + [h["val_iou"] for h in history],
             "s-", label="validation")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("IoU")
    ax2.set_ylim(0, 1)
    ax2.legend()
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)
