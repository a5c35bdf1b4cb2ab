"""``python -m segloop ...``: the same command line as the ``segloop`` script.

For environments where the console script is not on PATH (a venv not activated, a container
entry point). Must not import anything but segloop.cli, and nothing at import time beyond it.
"""

from __future__ import annotations

import sys

from segloop.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
