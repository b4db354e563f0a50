#!/usr/bin/env bash
# The main job: sets everything up (idempotent), builds, writes a digital-patient case (planning CT
# as DICOM with a 6-phase 4-D CT) and runs the whole guidance stack in one process on it, then prints
# what it did: marker classes, registration (FRE, predicted TRE), the plan (clearance, vessel volumes),
# target error against the truth, latency. It records the session as a rosbag2 bag
# (.setup/demo_bags/<time>) and writes a report with a picture of the plan (.setup/demo_report/).
#   scripts/demo.sh [SECONDS]      (default 45 s of guidance, counted from when the plan is published)
# The registration takes its entry point from the plan, so no target can be valid before the
# segmentation and planning of the CT have finished (~25 s beside the stack): the stack runs until the
# plan is published (at most NEEDLE_NAV_DEMO_PLAN_WAIT s, default 240) and then SECONDS more.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_TO_RUN="${1:-45}"
PLAN_WAIT="${NEEDLE_NAV_DEMO_PLAN_WAIT:-240}"
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
echo "[demo] running the needle_nav stack on ROS domain ${ROS_DOMAIN_ID:-0} with the case in $CASE (Ctrl-C stops it early)"
echo "[demo] timeline: segmentation and planning of the planning CT (about 25 s; markers classified after ~10 s meanwhile)"
echo "[demo]           -> plan published: registration with the plan's entry point, then ${SECONDS_TO_RUN} s of guidance"
echo "[demo]              (10 s calm-breathing baseline, then valid targets); waits at most ${PLAN_WAIT} s for the plan"
echo "[demo]           the summary's timeline says when each step happened"
# A hard limit besides --run-for and --plan-wait, so the demo always ends.
exec timeout -k 5 "$(( SECONDS_TO_RUN + PLAN_WAIT + 30 ))" ./target/release/needle_nav_stack \
  --run-for "$SECONDS_TO_RUN" --plan-wait "$PLAN_WAIT" --summary \
  --record "$BAG" --report "$ROOT/.setup/demo_report" \
  --ros-args -p lesion_registration:ct_case_dir:="$CASE" -p needle_target:ct_case_dir:="$CASE" \
  -p needle_target:baseline_s:=10.0 -p lesion_registration:entry_source:=plan \
  -p trajectory_planner:ct_case_dir:="$CASE" -p trajectory_planner:output_dir:="$ROOT/.setup/demo_plan" \
  -p vessel_segmentation:overwrite_results:=true
