#!/usr/bin/env bash
# The main job: sets everything up (idempotent), builds, and runs the whole guidance stack
# in one process on the built-in simulated patient, then prints what it did.
#   scripts/demo.sh [SECONDS]      (default 20; the classifier needs about 10 s of breathing)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_TO_RUN="${1:-20}"
bash "$ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
source "$ROOT/.setup/env.sh"
cd "$ROOT"
cargo build --release --locked
echo "[demo] running the needle_nav stack for ${SECONDS_TO_RUN} s on ROS domain ${ROS_DOMAIN_ID:-0} (Ctrl-C stops it early)"
# A hard limit besides --run-for, so the demo always ends.
exec timeout -k 5 "$(( SECONDS_TO_RUN + 30 ))" ./target/release/needle_nav_stack --run-for "$SECONDS_TO_RUN" --summary
