#!/usr/bin/env bash
# The main job: sets everything up (idempotent), builds, writes a digital-patient case (planning CT
# as DICOM with a 6-phase 4-D CT) and runs the whole guidance stack in one process on it, then prints
# what it did: marker classes, registration (FRE, predicted TRE), the plan (clearance, vessel volumes),
# target error against the truth, latency. It records the session as a rosbag2 bag
# (.setup/demo_bags/<time>) and writes a report with a picture of the plan (.setup/demo_report/).
#   scripts/demo.sh [SECONDS]      (default 45: classification ~10 s, registration, 10 s baseline, then targets)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_TO_RUN="${1:-45}"
bash "$ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
source "$ROOT/.setup/env.sh"
cd "$ROOT"
cargo build --release --locked
CASE="$ROOT/.setup/demo_case"
if [[ ! -f "$CASE/case.json" ]]; then
  ./target/release/needle_nav phantom --out "$CASE" --phases 6 --dims 176x128x160 --spacing 2x2x2
fi
BAG="$ROOT/.setup/demo_bags/session_$(date +%Y%m%d_%H%M%S)"
mkdir -p "$(dirname "$BAG")"
echo "[demo] running the needle_nav stack for ${SECONDS_TO_RUN} s on ROS domain ${ROS_DOMAIN_ID:-0} with the case in $CASE (Ctrl-C stops it early)"
# A hard limit besides --run-for, so the demo always ends.
exec timeout -k 5 "$(( SECONDS_TO_RUN + 30 ))" ./target/release/needle_nav_stack --run-for "$SECONDS_TO_RUN" --summary \
  --record "$BAG" --report "$ROOT/.setup/demo_report" \
  --ros-args -p lesion_registration:ct_case_dir:="$CASE" -p needle_target:ct_case_dir:="$CASE" \
  -p needle_target:baseline_s:=10.0 -p lesion_registration:entry_source:=plan \
  -p trajectory_planner:ct_case_dir:="$CASE" -p trajectory_planner:output_dir:="$ROOT/.setup/demo_plan" \
  -p vessel_segmentation:overwrite_results:=true
