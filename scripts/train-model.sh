#!/usr/bin/env bash
# The one reproducible training run of the vessel segmentation model (seeded):
#   set-up -> digital patients -> training (CPU) -> ONNX export -> report + parity fixture.
# Writes models/vessel_unet.onnx, models/vessel_unet_report/ and tests/fixtures/vessel_unet_parity/.
# Needs the release build of needle_nav (its `phantom` command makes the digital patients):
# scripts/test.sh or `cargo build --release` first. Extra arguments go to
# `python -m needle_nav_training.train` (see --help there); SEED overrides the seed (default 5).
# About 20 min on 2 idle CPU cores (training capped at 27 min of wall clock).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/setup-training.sh"

BIN=${NEEDLE_NAV_BIN:-$ROOT/target/release/needle_nav}
if [ ! -x "$BIN" ]; then
    echo "train-model: $BIN not found: build first (scripts/test.sh or cargo build --release)" >&2
    exit 1
fi
# A private copy, so a concurrent rebuild of target/ cannot swap the binary mid-run.
PHANTOM_BIN=$(mktemp /tmp/needle_nav_phantom_bin.XXXXXX)
trap 'rm -f "$PHANTOM_BIN"' EXIT
cp "$BIN" "$PHANTOM_BIN"
chmod 755 "$PHANTOM_BIN"

mkdir -p "$ROOT/models/vessel_unet_report"
cd "$ROOT/training"
OMP_NUM_THREADS=2 PYTHONHASHSEED=0 "$ROOT/.venv-training/bin/python" -m needle_nav_training.train \
    --seed "${SEED:-5}" --phantom-bin "$PHANTOM_BIN" --env-script "$ROOT/.setup/env.sh" "$@" \
    2>&1 | tee "$ROOT/models/vessel_unet_report/train.log"
