"""Fine-tuning of SAM 2-family models (``segloop train``) on 2D folders, 3D manifests and the
server's reviewed masks.

``config`` (the run's settings), ``data`` (records, patient splits, clips and prompts),
``prepare`` (the resolved config and its split data) and ``runlog`` (metrics.csv, curves) are
torch-free; ``model``, ``loss``, ``steps`` (one step, validation scores), ``checkpoint``,
``export`` (the transformers folder, registration), ``trainer`` (the loop) and ``eval2d``
import torch and are imported only when training or evaluating runs. Importing this package
imports neither torch nor the API; must not import the API, jobs, the worker or the CLI.
"""

from segloop.train.config import Part, Precision, Scheduler, TrainConfig

__all__ = ["Part", "Precision", "Scheduler", "TrainConfig"]
