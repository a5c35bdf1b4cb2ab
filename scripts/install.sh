#!/usr/bin/env bash
# Install segloop into ./.venv (and the viewer's npm packages into ./node_modules).
#   bash scripts/install.sh          # what `segloop serve` needs
#   bash scripts/install.sh --dev    # + SAM2 engines, ISM, test tools, headless Chromium (as root)
#   bash scripts/install.sh --ism    # + the ISM service (segloop ism serve; no torch needed)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP=(.venv/bin/pip install -q --disable-pip-version-check)
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if [ "${1:-}" = "--dev" ]; then
    # torch is pinned: 2.13.0 is the local CPU build; other specs download GBs of CUDA packages.
    "${PIP[@]}" torch==2.13.0
    "${PIP[@]}" -e '.[sam2,service,train,ism,dev]'
    # MONAI Label's real client for the protocol tests: --no-deps, or it pulls torchvision,
    # MONAI's full stack and sam2; its client module needs only requests (in [dev]), and
    # legacy-cgi from Python 3.13 on (the stdlib cgi module is gone there)
    "${PIP[@]}" --no-deps monailabel==0.8.5
    if .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 13))'; then
        "${PIP[@]}" legacy-cgi
    fi
    # Debian packages the tests use: chromium (browser tests), docker-compose (`compose config`
    # check of docker-compose.yml; no Docker engine needed), redis-server (Celery tests),
    # Orthanc with its DICOMweb plugin (the MONAI Label DICOMweb datastore tests start their own)
    missing=()
    command -v chromium >/dev/null || missing+=(chromium chromium-driver)
    docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || missing+=(docker-compose)
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v Orthanc >/dev/null || missing+=(orthanc)
    [ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing+=(orthanc-dicomweb)
    if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing Debian packages for the tests: ${missing[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
elif [ "${1:-}" = "--ism" ]; then
    # `segloop ism serve` without the SAM2 engines: the weights-free classic ISM backend
    "${PIP[@]}" -e '.[ism]'
else
    "${PIP[@]}" -e .
fi
if command -v npm >/dev/null; then
    # the web viewer's NiiVue comes from npm (node_modules is not committed)
    [ -d node_modules/@niivue/niivue ] || npm ci --no-audit --no-fund --loglevel=error
else
    echo "npm not found: the web viewer needs Node.js/npm (run 'npm ci' once it is installed)" >&2
fi
