"""Fine-tuning of SAM 2-family models (``segloop train``) on 2D folders, 3D manifests and the
server's reviewed masks.

``config`` (the run's settings), ``data`` (records, patient splits, clips and prompts) and
``versions`` (registering a run as a model) are torch-free; ``model``, ``loss``, ``trainer``
and ``eval2d`` import torch and are imported only when training or evaluating runs.
Importing this package imports neither torch nor the API.
"""

from segloop.train.config import Part, Precision, Scheduler, TrainConfig

__all__ = ["Part", "Precision", "Scheduler", "TrainConfig"]
