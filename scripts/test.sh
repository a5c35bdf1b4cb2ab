#!/usr/bin/env bash
# Install segloop and its test tools, then run ruff, mypy (strict on src/) and pytest.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k io -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --dev
echo "== ruff" && .venv/bin/ruff check src tests benchmarks
echo "== mypy" && .venv/bin/mypy
echo "== pytest" && .venv/bin/python -m pytest "$@"
