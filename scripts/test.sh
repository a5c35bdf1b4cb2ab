#!/usr/bin/env bash
# Install segloop and its test tools into .venv, then run ruff, mypy (strict on src/) and pytest.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k io -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch is pinned: 2.13.0 is the local CPU build; any other spec downloads GBs of CUDA packages.
.venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
echo "== ruff" && .venv/bin/ruff check src tests
echo "== mypy" && .venv/bin/mypy
echo "== pytest" && .venv/bin/python -m pytest "$@"
