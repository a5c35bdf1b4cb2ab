"""Fine-tuning SAM-Med3D (``segloop train --model sammed3d``): the seed project's data and loop.

``data`` (CSV rows, safe ``.pkl`` loading, row checks) is torch-free; ``loop`` imports torch and
is imported only when training runs. Importing this package imports neither torch nor the API.
"""

__all__: list[str] = []
