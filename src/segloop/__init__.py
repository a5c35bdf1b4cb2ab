"""segloop: human-in-the-loop 3D medical image segmentation.

Layers (dependencies point down only): cli -> api/worker/web/train/eval -> jobs -> engines -> io
-> types/errors/config. Importing this package does no work: no model, no settings, no I/O.
It must not import any subpackage but segloop.errors.
"""

from segloop.errors import SegloopError

__all__ = ["SegloopError", "__version__"]

__version__ = "0.1.0"
