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
# PostgreSQL tests (tests/worker): on SEGLOOP_TEST_PG_URL, which .ci/run sets to the local server
# (trust auth, database `test`); when set, PostgreSQL must answer: the tests fail rather than fall
# back to SQLite. Unset here and a local server answering: use it too.
pg_ok() { .venv/bin/python -c 'import os, psycopg2; psycopg2.connect(os.environ["SEGLOOP_TEST_PG_URL"], connect_timeout=5).close()' 2>/dev/null; }
if [ -z "${SEGLOOP_TEST_PG_URL+x}" ]; then
    SEGLOOP_TEST_PG_URL=postgresql://postgres@127.0.0.1:5432/test pg_ok \
        && export SEGLOOP_TEST_PG_URL=postgresql://postgres@127.0.0.1:5432/test \
        || echo "== no PostgreSQL on 127.0.0.1:5432: the PostgreSQL tests run on SQLite"
elif [ -n "$SEGLOOP_TEST_PG_URL" ]; then
    export SEGLOOP_TEST_PG_URL
    if ! pg_ok && [ "$(id -u)" = 0 ] && command -v service >/dev/null; then
        echo "== starting PostgreSQL" && service postgresql start >/dev/null 2>&1 || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do pg_ok && break; sleep 1; done
    fi
    pg_ok || { echo "SEGLOOP_TEST_PG_URL=$SEGLOOP_TEST_PG_URL: PostgreSQL does not answer" >&2; exit 1; }
    echo "== postgresql: $SEGLOOP_TEST_PG_URL"
fi
step ruff .venv/bin/ruff check src tests benchmarks
step mypy .venv/bin/mypy
step lint-imports .venv/bin/lint-imports
step "pytest (default)" .venv/bin/python -m pytest "$@"
# exit code 5 = no test selected (e.g. a -k that matches no slow test): not a failure
step "pytest -m slow (learning tests)" bash -c \
    '.venv/bin/python -m pytest -m "slow and not gpu and not weights" "$@"; rc=$?; [ $rc -eq 5 ] && exit 0; exit $rc' \
    _ "$@"
