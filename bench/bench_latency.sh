#!/usr/bin/env bash
# Latency from a tracker sample's acquisition to the published target arriving at a listener,
# at 250 Hz with 12 markers: all nodes in one process versus one process per node.
# The simulated tracker's own delivery latency is set to 0 so only the stack is measured.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$ROOT/.setup/env.sh"
BIN="${NEEDLE_NAV_BIN_DIR:-$ROOT/target/release}"
SECONDS_RUN="${1:-40}"
CASE="$(mktemp -d)"
trap 'rm -rf "$CASE"; pkill -P $$ 2>/dev/null || true' EXIT
export ROS_DOMAIN_ID="${NEEDLE_NAV_BENCH_DOMAIN:-$(( 10 + RANDOM % 80 ))}" ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST RUST_LOG=warn
"$BIN/needle_nav" phantom --out "$CASE" --phases 6 --dims 176x128x160 --spacing 2x2x2 >/dev/null
ARGS=(--ros-args -p marker_tracker:latency_s:=0.0 -p marker_tracker:rate_hz:=250.0
      -p lesion_registration:ct_case_dir:="$CASE" -p needle_target:ct_case_dir:="$CASE" -p needle_target:baseline_s:=8.0)
summary() { grep -E "^(tracker|targets|latency) " || echo "(no summary: the run failed)"; }

echo "=== one process (needle_nav_stack), ${SECONDS_RUN} s ==="
# Hard time limits: a stuck process must not hang the benchmark (see docs/known-issues.md).
LIMIT=$(( SECONDS_RUN + 30 ))
timeout -k 5 "$LIMIT" "$BIN/needle_nav_stack" --run-for "$SECONDS_RUN" --summary "${ARGS[@]}" 2>/dev/null | summary

echo "=== one process per node (6 node processes + a listener process), ${SECONDS_RUN} s ==="
pids=()
for node in marker_tracker marker_classifier lesion_registration needle_target vessel_segmentation trajectory_planner; do
  timeout -k 5 "$LIMIT" "$BIN/needle_nav_stack" --only "$node" --run-for "$(( SECONDS_RUN + 2 ))" "${ARGS[@]}" 2>/dev/null &
  pids+=($!)
done
timeout -k 5 "$LIMIT" "$BIN/needle_nav_stack" --only none --run-for "$SECONDS_RUN" --summary "${ARGS[@]}" 2>/dev/null | summary
wait "${pids[@]}" 2>/dev/null || true
