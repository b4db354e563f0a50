#!/usr/bin/env bash
# The one reproducible training run of the vessel segmentation model (issue 12), seeded:
#   set-up -> the real contrast abdomen series at 2 mm -> training on digital patients rendered on
#   the fly (training/needle_nav_training/anatomy.py) -> ONNX export -> evaluation -> report.
# Writes models/vessel_unet.onnx, models/vessel_unet_report/ and tests/fixtures/vessel_unet_parity/.
#
# Resumable: checkpoints go to training/data/run$SEED/ (every 25 iterations and when the time budget
# runs out); running the same command again goes on from the last one. CPU or GPU: the data stream
# and the schedule are the same; a GPU (torch sees CUDA) is used when there is one.
#   scripts/train-model.sh                               # CPU, 2 threads, 10 h budget per invocation
#   WORKERS=15 scripts/train-model.sh                    # GPU machine: 15 rendering workers
#   BUDGET_MIN=60 scripts/train-model.sh                 # stop after an hour, resume later
# Extra arguments go to `python -m needle_nav_training.train_anatomy` (see --help there).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/setup-training.sh"
SEED=${SEED:-12}
PY="$ROOT/.venv-training/bin/python"
cd "$ROOT/training"
REAL="$ROOT/training/data/real_j2k_2mm.npz"
if [ ! -f "$REAL" ]; then
    "$PY" -m needle_nav_training.train_anatomy --prepare-real --real-npz "$REAL"
fi
mkdir -p "$ROOT/models/vessel_unet_report" "$ROOT/training/data/run$SEED"
OMP_NUM_THREADS=${THREADS:-2} PYTHONHASHSEED=0 PYTHONUNBUFFERED=1 "$PY" -m needle_nav_training.train_anatomy \
    --seed "$SEED" --iterations "${ITERATIONS:-2100}" --batch 12 --patch 64 --base 8 \
    --checkpoint-dir "$ROOT/training/data/run$SEED" --checkpoint-every 25 \
    --budget-minutes "${BUDGET_MIN:-600}" --workers "${WORKERS:-1}" --threads "${THREADS:-2}" \
    --real-npz "$REAL" "$@" 2>&1 | tee -a "$ROOT/training/data/run$SEED/train.log"
