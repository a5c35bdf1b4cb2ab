#!/usr/bin/env bash
# Build the CPU stand-in for the GPU image under /tmp/gpukit-test (run from the repo root):
# KIT=.gpukit bash benchmarks/gpukit/make_image_env.sh
# a python 3.11 venv whose only packages are the image's list (image_packages.txt beside this, from
# /work/.library/device/KINDS.md) linked from /work/main/.venv, plus opencv-python-headless and
# portalocker (in the image, not in our venv), plus httpx2/httpcore2/truststore (our
# huggingface_hub 2.4 needs them; the image's 1.33 does not); torchvision is absent here (the
# parity driver has a stand-in; MedSAM2's video predictor does not import it). The carried
# wheels go to /tmp/gpukit-test/whl with pydantic_core as cp311. Then:
#   SMALL=1 PY=/tmp/gpukit-test/venv/bin/python SITE=/tmp/gpukit-test/site WHL=/tmp/gpukit-test/whl \
#     OUT=/tmp/gpukit-test/out BUDGET=3000 ISM_PARITY_TIMEOUT=1500 ... bash benchmarks/gpukit/run.sh PART...
set -eu
T=/tmp/gpukit-test; V=/work/main/.venv; S=$V/lib/python3.11/site-packages
HERE=$(cd "$(dirname "$0")" && pwd)
KIT=${KIT:-$HERE/../../.gpukit}
mkdir -p $T/whl && cp "$KIT"/whl/*.whl $T/whl/ && rm -f $T/whl/pydantic_core-*cp312*
$V/bin/python -m pip download --no-deps --only-binary=:all: -q -d $T/whl \
    "pydantic_core==$(ls "$KIT"/whl | sed -n 's/^pydantic_core-\([^-]*\)-.*/\1/p')"
rm -rf $T/imgextra && $V/bin/python -m pip install -q --no-deps --target $T/imgextra opencv-python-headless portalocker
$V/bin/python - "$HERE/image_packages.txt" <<'PY'
import importlib.metadata as md, os, pathlib, re, shutil, sys
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
allowed = {norm(n) for n in open(sys.argv[1]).read().split()} | {"httpx2", "httpcore2", "truststore"}
farm = pathlib.Path("/tmp/gpukit-test/imagesite"); shutil.rmtree(farm, ignore_errors=True); farm.mkdir()
for d in md.distributions(path=["/work/main/.venv/lib/python3.11/site-packages", "/tmp/gpukit-test/imgextra"]):
    if norm(d.metadata["Name"]) not in allowed:
        continue
    base = pathlib.Path(d._path).parent
    for t in {pathlib.PurePath(f).parts[0] for f in (d.files or [])} | {pathlib.Path(d._path).name}:
        if t not in ("..", "bin") and (base / t).exists() and not (farm / t).exists():
            os.symlink(base / t, farm / t)
PY
rm -rf $T/venv && "$(sed -n 's/^home = //p' $V/pyvenv.cfg)/python3" -m venv --without-pip $T/venv
echo $T/imagesite > $T/venv/lib/python3.11/site-packages/imagesite.pth
$T/venv/bin/python -c "import torch, transformers, cv2; print('image stand-in ready')"
