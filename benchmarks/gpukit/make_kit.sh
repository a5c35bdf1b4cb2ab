#!/usr/bin/env bash
# Rebuild the GPU kit (issues 13 and 16) from scratch, on the team's CPU machine:
#   bash benchmarks/gpukit/make_kit.sh [MEDSAM2_GIT_DIR] [SAM6D_GIT_DIR]
# KIT (default .gpukit at the repository root; ignored by git) receives
#   whl/   the wheels the GPU image lacks, pinned, for CPython 3.12 manylinux x86_64
#   code/  git archive of the official MedSAM2 and SAM-6D (ISM) code, from mirrors brought here
#          with the team's fetch tool (fetch github:bowang-lab/MedSAM2, github:JiehongLin/SAM-6D)
#   data/sam6d/  SAM-6D's example scene (../shared/data does not travel to the GPU machine)
#   extra.sh.example  the template for the optional `extra` part
# Third-party code and wheels are never committed: they only live in $KIT.
# PIP: a pip that can reach PyPI (default /work/main/.venv/bin/python -m pip; pip 23.2 tested).
set -eu -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
KIT=${KIT:-$ROOT/.gpukit}
case "$KIT" in /*) ;; *) KIT=$ROOT/$KIT ;; esac
MEDSAM2_GIT=${1:-/work/.mirror/bowang-lab+MedSAM2/repo}
SAM6D_GIT=${2:-/work/.mirror/JiehongLin+SAM-6D/repo}
SCENE=${SCENE:-$ROOT/../shared/data/sam6d}
PY=${PIP_PYTHON:-/work/main/.venv/bin/python}
[ -e "$KIT" ] && { echo "make_kit: $KIT exists; remove it first (rm -rf $KIT)" >&2; exit 1; }
for g in "$MEDSAM2_GIT" "$SAM6D_GIT"; do
  git --git-dir="$g" rev-parse --verify -q HEAD >/dev/null ||
    { echo "make_kit: no git mirror at $g (fetch it with the team's fetch tool)" >&2; exit 1; }
done
[ -f "$SCENE/rgb.png" ] || { echo "make_kit: no SAM-6D scene at $SCENE" >&2; exit 1; }
mkdir -p "$KIT/whl" "$KIT/code/MedSAM2" "$KIT/code/SAM-6D" "$KIT/data/sam6d"

# ---- wheels: the GPU image has python 3.12, torch, transformers 5.17, torchvision, opencv ...
# (its list: benchmarks/gpukit/image_packages.txt); segloop and the official code need these too.
# Pinned to what the kit was tested with on 27 Nov 2026; --no-deps: the list is complete.
PIN=(
  transformers==5.23.0                      # segloop pins >=5.23,<5.24
  pydantic==2.14.4 pydantic_core==2.50.5    # pydantic_core is the only binary (cp312) wheel
  pydantic-settings==2.16.3 python-dotenv==1.2.4 annotated-types==0.8.0
  typing-inspection==0.4.5 typing_extensions==4.16.0
  nibabel==5.4.2 pydicom==3.0.2             # segloop.io imports them
  hydra-core==1.3.2 omegaconf==2.3.0 iopath==0.1.9   # MedSAM2's predictor
  trimesh==5.2.0 distinctipy==1.3.4 ruamel.yaml==0.19.1   # SAM-6D's ISM
)
"$PY" -m pip download -q --no-deps --only-binary=:all: --implementation cp --python-version 3.12 \
    --abi cp312 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    -d "$KIT/whl" "${PIN[@]}"
# antlr4 4.9.3 (omegaconf 2.3's pin) exists only as an sdist: build its pure-python wheel here
"$PY" -m pip wheel -q --no-deps --no-binary=antlr4-python3-runtime -w "$KIT/whl" antlr4-python3-runtime==4.9.3
echo "make_kit: $(ls "$KIT/whl" | wc -l) wheels in $KIT/whl"

# ---- the official code (git archive of the mirrors' HEAD; the commit is printed for the logs)
git --git-dir="$MEDSAM2_GIT" archive HEAD LICENSE sam2 efficient_track_anything | tar -x -C "$KIT/code/MedSAM2"
git --git-dir="$SAM6D_GIT" archive HEAD SAM-6D/Instance_Segmentation_Model | tar -x -C "$KIT/code"
echo "make_kit: MedSAM2 $(git --git-dir="$MEDSAM2_GIT" rev-parse HEAD) ($MEDSAM2_GIT)"
echo "make_kit: SAM-6D  $(git --git-dir="$SAM6D_GIT" rev-parse HEAD) ($SAM6D_GIT)"

# ---- the scene (vis_ism.png, SAM-6D's picture of its result, is not needed)
for f in LICENSE camera.json depth.png rgb.png obj_000005.ply ism_reference_mask.png; do
  cp "$SCENE/$f" "$KIT/data/sam6d/$f"
done
chmod -R u+w "$KIT/data"
cp "$HERE/extra.sh.example" "$KIT/extra.sh.example"
echo "make_kit: $KIT ready ($(du -sh "$KIT" | cut -f1)); carry it as \"${KIT#"$ROOT"/}\" if it is under the repo root"
