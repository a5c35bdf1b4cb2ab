"""Model registry, downloads and the local weight cache (``segloop models ...``).

``registry`` lists known checkpoints, ``download`` fetches them resumably, ``store`` manages the
cache under ``$SEGLOOP_HOME/models``; ``convert`` and ``loader`` (torch) are imported only when a
model is converted or loaded. Importing this package must not import torch.
"""

from segloop.models.registry import ModelSpec, get_spec, model_names, register_model
from segloop.models.store import (
    import_model,
    is_available,
    models_home,
    pull,
    remove,
    status,
    verify,
)

__all__ = ["ModelSpec", "get_spec", "import_model", "is_available", "model_names", "models_home",
           "pull", "register_model", "remove", "status", "verify"]
