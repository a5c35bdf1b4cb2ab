#!/usr/bin/env bash
# GPU kit (issues 13 and 16): bash benchmarks/gpukit/run.sh PART... with PART among env, ism
# (parity at SAM-6D's thresholds), ismloose (parity, permissive thresholds; after ism), ismbench
# (bench_ism.py), sbs (MedSAM2 side by side, bf16 and fp32), engine (segloop bench engine, 200
# and 1000 slices), extra ($KIT/extra.sh); medsam2 = sbs engine; all = every part in the order
# above. See benchmarks/gpukit/README.md for the device call.
#
# Runs in the repository root on the GPU machine (python3 there has torch, transformers,
# torchvision, pytorch_lightning ...). KIT (default .gpukit at the repository root, built by
# make_kit.sh, ignored by git) holds the wheels, the official code and the scene. Installs
# $KIT/whl/*.whl into $SITE once, then each part writes $OUT/<part>.log. SMALL=1: the CPU
# smoke-test sizes (vit_b + dinov2_vits14, few points, 128x128x8 fp32 on the CPU) used to test
# this script where there is no GPU. The parity drivers are the committed benchmarks/parity_ism*.py.
set -u -o pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 1
KIT=${KIT:-.gpukit}
case "$KIT" in /*) ;; *) KIT=$ROOT/$KIT ;; esac
if [ ! -d "$KIT/whl" ] || [ ! -d "$KIT/code/SAM-6D" ] || [ ! -d "$KIT/data/sam6d" ]; then
  echo "gpukit: no kit at $KIT (build it with: bash benchmarks/gpukit/make_kit.sh; carry it)"; exit 1
fi
OUT=${OUT:-/tmp/gpukit-out}
PY=${PY:-python3}
SITE=${SITE:-/tmp/site}
WHL=${WHL:-$KIT/whl}
SMALL=${SMALL:-0}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
mkdir -p "$OUT"

# ---- wheels -> $SITE (once per machine), then the import path: carried wheels, segloop, kit extras
if [ ! -f "$SITE/.gpukit-installed" ]; then
  t0=$SECONDS
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "$WHL"/*.whl || { echo "gpukit: wheel install failed"; exit 1; }
  touch "$SITE/.gpukit-installed"
  echo "gpukit: wheels installed into $SITE in $((SECONDS - t0)) s"
fi
export PYTHONPATH="$SITE:$ROOT/src${KIT_EXTRA_PATH:+:$KIT_EXTRA_PATH}"
# insurance: if the carried transformers (segloop's tested 5.23) does not import beside this
# torch, fall back to the image's own and say so (then the logs are read with that in mind)
TF_CHECK="from transformers import SamModel, Dinov2Model, Sam2Model, Sam2VideoModel, Sam2VideoInferenceSession"
if ! "$PY" -c "$TF_CHECK" 2>"$OUT/tf_check.err"; then
  echo "gpukit: carried transformers failed to import ($(tail -1 "$OUT/tf_check.err")); using the image's"
  rm -rf "$SITE"/transformers "$SITE"/transformers-*.dist-info
  "$PY" -c "$TF_CHECK; import transformers; print('gpukit: transformers', transformers.__version__)"
fi
rm -f "$OUT/tf_check.err"

if [ "$SMALL" = 1 ]; then
  DEV=cpu; NT=${NT:-2}; SAM=vit_b; SAMREG=sam-vit-b; DINO=dinov2_vits14; PPS=4; BPPS=2; NTPL=5; NPROP=4
  SIZE=(128 128 8); XY=128; SLICES=7; BIGSLICES=15; PRECS=(fp32); ISMREP=1
else
  DEV=cuda; NT=${NT:-16}; SAM=vit_h; SAMREG=sam-vit-h; DINO=dinov2_vitl14; PPS=32; BPPS=32; NTPL=42; NPROP=16
  SIZE=(512 512 200); XY=512; SLICES=199; BIGSLICES=999; PRECS=(bf16 fp32); ISMREP=3
fi
# scratch: RAM when /dev/shm has room (the ViT-H + ViT-L random checkpoints are ~3.7 GB), else /tmp
SCRATCH=/tmp/gpukit-scratch
if [ "$(df -Pk /dev/shm 2>/dev/null | awk 'NR==2 {print $4}')" -gt 12000000 ] 2>/dev/null; then
  SCRATCH=/dev/shm/gpukit-scratch
fi
mkdir -p "$SCRATCH"

stamp() { echo "=== $(date -u +%H:%M:%S) $*"; }
# One deadline for the whole call (BUDGET seconds from the script's start, default 540 of the tool's 600):
# each step's timeout is its own limit or what is left, whichever is smaller, so the logs under
# $OUT always come back; a step with under 20 s left is skipped and says so.
DEADLINE=${BUDGET:-540}  # SECONDS counts from the start of this script, wheel install included
tmo() {  # tmo LIMIT -> prints the timeout to use, or fails when too little is left
  local left=$((DEADLINE - SECONDS - 5))
  [ "$left" -lt 20 ] && { echo "gpukit: SKIPPED (only ${left}s of the budget left)" >&2; return 1; }
  [ "$1" -lt "$left" ] && echo "$1" || echo "$left"
}

part_env() {
  stamp "env: $DEV, SMALL=$SMALL, scratch $SCRATCH"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  nproc; free -g | head -2; df -h /dev/shm /tmp | tail -2
  "$PY" - <<'EOF'
import importlib, sys
print(sys.version.split()[0], sys.executable)
for m in ("torch", "transformers", "huggingface_hub", "tokenizers", "safetensors", "numpy", "scipy",
          "skimage", "PIL", "cv2", "torchvision", "pydantic", "nibabel", "hydra", "omegaconf", "trimesh",
          "iopath", "distinctipy", "typing_extensions", "segloop"):
    try:
        mod = importlib.import_module(m)
        print(f"{m:18} {getattr(mod, '__version__', '?'):14} {getattr(mod, '__file__', '')}")
    except Exception as e:  # noqa: BLE001 - a report, not a program
        print(f"{m:18} MISSING: {e}")
import torch
print("cuda:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
}

part_ism() {  # issue 13: parity with SAM-6D's code at its real sizes and thresholds
  local w="$SCRATCH/ism" code="$KIT/code/SAM-6D/Instance_Segmentation_Model" scene="$KIT/data/sam6d" t
  stamp "ism parity: SAM $SAM, DINOv2 $DINO, ${PPS}x$PPS points, $NTPL templates, $NPROP proposals on $DEV"
  t=$(tmo "${ISM_PARITY_TIMEOUT:-330}") && timeout -k 5 "$t" "$PY" benchmarks/parity_ism.py --sam6d-code "$code" \
      --extra-site "$SITE" --work "$w" --scene "$scene" --device "$DEV" --threads "$NT" \
      --sam "$SAM" --dino "$DINO" --points-per-side "$PPS" --templates "$NTPL" --n-proposals "$NPROP" \
      --stability-score-thresh 0.97 --pred-iou-thresh 0.88
  echo "parity exit $?"
  stamp "ism done"
}

part_ismbench() {  # issue 13 speed: seconds per request, proposals / descriptors / scoring
  local w="$SCRATCH/ism" scene="$KIT/data/sam6d" t
  local tpl="$w/templates"
  [ "$NTPL" = 42 ] || tpl="$w/templates_42"
  stamp "ism speed: bench_ism.py --backends sam ($SAMREG + dinov2-vitl14 random) on $DEV"
  t=$(tmo "${ISM_BENCH_TIMEOUT:-120}") && timeout -k 5 "$t" "$PY" benchmarks/bench_ism.py --scene "$scene" --backends sam \
      --sam "$SAMREG" --points-per-side "$BPPS" --repeat "$ISMREP" --templates "$tpl"
  echo "bench_ism exit $?"
  stamp "ismbench done"
}

part_ismloose() {  # issue 13 on many proposals: SAM-6D's thresholds may keep no mask and no
  # proposal of random weights, so every stage is compared again with stability 0, predicted IoU -1
  # and semantic confidence 0 (checkpoints and templates of the `ism` part reused: run it after)
  local src="$SCRATCH/ism" w="$SCRATCH/ismloose" d t
  [ -d "$src/checkpoints" ] || { echo "run the ism part first"; return 1; }
  mkdir -p "$w"
  # the 42 rendered views are reused; a view subset (SMALL) is copied afresh by parity_ism.py
  for d in checkpoints templates_42 $([ "$NTPL" = 42 ] && echo templates); do
    [ -e "$src/$d" ] && ln -sfn "$src/$d" "$w/$d"
  done
  stamp "ism parity, permissive thresholds (stability 0, pred IoU -1, confidence 0): SAM $SAM, ${PPS}x$PPS points"
  t=$(tmo "${ISM_LOOSE_TIMEOUT:-240}") && timeout -k 5 "$t" "$PY" benchmarks/parity_ism.py \
      --sam6d-code "$KIT/code/SAM-6D/Instance_Segmentation_Model" --extra-site "$SITE" --work "$w" \
      --scene "$KIT/data/sam6d" --device "$DEV" --threads "$NT" --sam "$SAM" --dino "$DINO" \
      --points-per-side "$PPS" --templates "$NTPL" --n-proposals "$NPROP" \
      --stability-score-thresh 0 --pred-iou-thresh -1 --confidence-thresh 0
  echo "parity (permissive) exit $?"
  stamp "ismloose done"
}

part_sbs() {  # issue 16: side by side with MedSAM2's own predictor (same random checkpoint)
  local w="$SCRATCH/medsam2" p t
  for p in "${PRECS[@]}"; do
    stamp "medsam2 side by side: synthetic ${SIZE[*]} $DEV $p"
    t=$(tmo "${MEDSAM2_SBS_TIMEOUT:-150}") && timeout -k 5 "$t" "$PY" benchmarks/medsam2_side_by_side.py \
        --medsam2 "$KIT/code/MedSAM2" --official-python "$PY" --synthetic "${SIZE[@]}" \
        --device "$DEV" --precision "$p" --work "$w"
    echo "side by side $p exit $?"
  done
  stamp "sbs done"
}

part_engine() {  # issue 16: segloop bench engine, then a long volume for peak GPU memory
  local t
  stamp "segloop bench engine: ${XY}x${XY}x$((SLICES + 1)) $DEV ${PRECS[0]} post device"
  t=$(tmo "${MEDSAM2_BENCH_TIMEOUT:-90}") && timeout -k 5 "$t" "$PY" -m segloop bench engine \
      --device "$DEV" --size 512 --xy "$XY" --slices "$SLICES" --precision "${PRECS[0]}" --post device \
      --threads "$NT"
  echo "bench engine exit $?"
  stamp "segloop bench engine memory check: ${XY}x${XY}x$((BIGSLICES + 1)) $DEV ${PRECS[0]}"
  t=$(tmo "${MEDSAM2_BIG_TIMEOUT:-120}") && timeout -k 5 "$t" "$PY" -m segloop bench engine \
      --device "$DEV" --size 512 --xy "$XY" --slices "$BIGSLICES" --precision "${PRECS[0]}" \
      --post device --threads "$NT"
  echo "bench engine (memory check) exit $?"
  stamp "engine done"
}

part_extra() {  # the other engineers' scripts: one command per line of $KIT/extra.sh
  local t
  if [ ! -f "$KIT/extra.sh" ]; then echo "no $KIT/extra.sh"; return 0; fi
  stamp "extra: $KIT/extra.sh"
  export DEV NT SMALL SCRATCH OUT PY KIT
  t=$(tmo "${EXTRA_TIMEOUT:-300}") && timeout -k 5 "$t" bash -x "$KIT/extra.sh"
  echo "extra exit $?"
}

parts=("$@")
[ "${#parts[@]}" = 0 ] && parts=(all)
expanded=()
for part in "${parts[@]}"; do
  case "$part" in
    all) expanded+=(env ism ismloose sbs ismbench engine extra) ;;
    medsam2) expanded+=(sbs engine) ;;
    env|ism|ismloose|ismbench|sbs|engine|extra) expanded+=("$part") ;;
    *) echo "gpukit: unknown part $part (env ism ismloose ismbench sbs engine extra; medsam2 = sbs engine; all)"
       exit 2 ;;
  esac
done
for part in "${expanded[@]}"; do
  "part_$part" 2>&1 | tee "$OUT/$part.log"
done
