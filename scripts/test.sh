#!/usr/bin/env bash
# Install segloop and its test tools, then run ruff, mypy (strict on src/), the import-layers
# contract (lint-imports, see [tool.importlinter] in pyproject.toml), the default pytest run
# (no slow/gpu/weights tests) and, in their own step, the slow learning tests; prints the wall
# time of each step and of the whole command.
# Extra arguments go to both pytest runs (e.g. `bash scripts/test.sh -k io -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
step() {  # step NAME CMD...: run CMD, then print how long it took
    local name=$1 t0=$SECONDS rc=0
    shift
    echo "== $name"
    "$@" || rc=$?
    echo "== $name: $((SECONDS - t0)) s"
    return "$rc"
}
trap 'echo "== test command wall time: $((SECONDS - start)) s"' EXIT
bash scripts/install.sh --dev
step ruff .venv/bin/ruff check src tests benchmarks
step mypy .venv/bin/mypy
step lint-imports .venv/bin/lint-imports
step "pytest (default)" .venv/bin/python -m pytest "$@"
# exit code 5 = no test selected (e.g. a -k that matches no slow test): not a failure
step "pytest -m slow (learning tests)" bash -c \
    '.venv/bin/python -m pytest -m "slow and not gpu and not weights" "$@"; rc=$?; [ $rc -eq 5 ] && exit 0; exit $rc' \
    _ "$@"
