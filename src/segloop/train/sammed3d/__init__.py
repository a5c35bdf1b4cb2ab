"""Fine-tuning SAM-Med3D (``segloop train --model sammed3d``): the seed project's data and loop.

``data`` (CSV rows, safe ``.pkl`` loading, row checks) is torch-free; ``loop`` imports torch and
is imported only when training runs. Importing this package imports neither torch nor the API.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.ism, segloop.eval (the layer contract, pyproject.toml).
"""

__all__: list[str] = []
