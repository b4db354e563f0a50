#!/usr/bin/env bash
# Re-records the small regression bags in tests/bags/ (run after a deliberate change of the
# guidance output; the replay tests then compare against the new recording). Each bag holds the
# tracker stream (25 Hz), the simulator truth and what the guidance nodes published live.
#   digital_patient : digital patient (seed 1) with synthetic breathing
#   extmarker_trace : the same patient driven by the first real ExtMarker breathing trace
# The planning case is regenerated from its seed by the tests, so it is not committed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$ROOT/.setup/env.sh"
cd "$ROOT"
cargo build --release --locked
CASE="$(mktemp -d)/case"
./target/release/needle_nav phantom --out "$CASE" --phases 6 --dims 176x128x160 --spacing 2x2x2 >/dev/null
TOPICS=needle_nav/markers,needle_nav/debug/ground_truth,needle_nav/marker_classification,needle_nav/registration,needle_nav/target
record() { # NAME SOURCE
  rm -rf "tests/bags/$1"
  timeout -k 5 70 ./target/release/needle_nav_stack --only marker_tracker,marker_classifier,lesion_registration,needle_target \
    --run-for 36 --summary --record "tests/bags/$1" --record-topics "$TOPICS" \
    --ros-args -p marker_tracker:rate_hz:=25.0 -p marker_tracker:source:="$2" \
    -p lesion_registration:ct_case_dir:="$CASE" -p needle_target:ct_case_dir:="$CASE" -p needle_target:baseline_s:=10.0 -p needle_target:tracker_rate_hz:=25.0
}
record digital_patient sim
record extmarker_trace trace
rm -rf "$(dirname "$CASE")"
du -sh tests/bags/*
