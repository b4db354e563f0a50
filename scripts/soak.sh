#!/usr/bin/env bash
# Soak test (not in CI): runs the all-in-one stack like the demo (digital-patient case, 250 Hz
# simulated tracker) for MINUTES and reports the stack's resident memory over time and, per interval,
# the target latency p50/p99 and the invalid targets by reason (scripts/soak_listener.py, an rclpy
# listener in its own process). Writes stack.log, memory.csv, intervals.csv and report.md into a
# new folder, which it names at the start and the end.
#   scripts/soak.sh [MINUTES]   (default 60)
# Environment: SOAK_OUT (the folder; default target/soak/soak_<UTC time>), SOAK_INTERVAL_S (300),
# SOAK_SAMPLE_S (memory sampling period, 10), SOAK_WARMUP_S (memory growth is fitted after it, 300:
# start-up and the planner's segmentation excluded), NEEDLE_NAV_BIN_DIR (default target/release), ROS_DOMAIN_ID (default: a random one in 10..89).
# Needs a release build. The binaries are copied into the folder first, so a rebuild during the run
# does not change what is soaked. A run of 60 minutes or more whose stack exited 0 also writes its
# report to docs/results/soak.md (shorter smoke runs do not replace the figures there).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$ROOT/.setup/env.sh"
# This checkout's binaries with this checkout's configuration and model (env.sh names the set-up's
# checkout, which is another one when .setup is shared between worktrees).
export NEEDLE_NAV_ROOT="$ROOT" NEEDLE_NAV_CONFIG_DIR="$ROOT/config" NEEDLE_NAV_MODEL_DIR="$ROOT/models"
MINUTES="${1:-60}"
if ! [[ "$MINUTES" =~ ^[0-9]+([.][0-9]+)?$ ]] || [[ "$MINUTES" =~ ^0+([.]0*)?$ ]]; then
  echo "soak.sh: MINUTES must be a positive number, not '$MINUTES'" >&2
  exit 2
fi
RUN_S="$(python3 -c "print(round(float('$MINUTES') * 60))")"
BIN="${NEEDLE_NAV_BIN_DIR:-$ROOT/target/release}"
OUT="${SOAK_OUT:-$ROOT/target/soak/soak_$(date -u +%Y%m%d_%H%M%S)}"
if [[ -e "$OUT" ]]; then
  echo "soak.sh: $OUT exists; it is not overwritten (choose another SOAK_OUT)" >&2
  exit 2
fi
for exe in needle_nav needle_nav_stack; do
  [[ -x "$BIN/$exe" ]] || { echo "soak.sh: no $BIN/$exe (cargo build --release --locked first)" >&2; exit 2; }
done
mkdir -p "$OUT/bin"
cp "$BIN/needle_nav" "$BIN/needle_nav_stack" "$OUT/bin/"
CASE="$(mktemp -d)"
STACK_PID=""
cleanup() {
  [[ -n "$STACK_PID" ]] && kill "$STACK_PID" 2>/dev/null || true
  rm -rf "$CASE"
}
trap cleanup EXIT
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( 10 + RANDOM % 80 ))}" ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
{
  echo "started $(date -u +%FT%TZ), ${MINUTES} min, ROS domain $ROS_DOMAIN_ID, git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+changes')"
  echo "host $(uname -n), $(nproc) CPUs, load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/run.txt"
echo "[soak] report folder: $OUT"
"$OUT/bin/needle_nav" phantom --out "$CASE" --phases 6 --dims 176x128x160 --spacing 2x2x2 >/dev/null

# The stack as in scripts/demo.sh (the planner segments the case's CT at start), without its
# in-process monitor (the listener does that job in another process, so the memory measured is the
# stack's own), with a hard limit besides --run-for. The registration takes the case's preset entry
# rather than the plan's (entry_source plan), so that guidance does not wait for a segmentation that
# runs at SCHED_IDLE on a busy machine.
timeout -k 10 "$(( RUN_S + 60 ))" "$OUT/bin/needle_nav_stack" --run-for "$RUN_S" \
  --ros-args -p marker_tracker:rate_hz:=250.0 \
  -p lesion_registration:ct_case_dir:="$CASE" -p needle_target:ct_case_dir:="$CASE" \
  -p needle_target:baseline_s:=10.0 \
  -p trajectory_planner:ct_case_dir:="$CASE" -p trajectory_planner:output_dir:="$OUT/plan" \
  >"$OUT/stack.log" 2>&1 &
TIMEOUT_PID=$!
for _ in $(seq 50); do
  STACK_PID="$(pgrep -P "$TIMEOUT_PID" -n || true)"
  [[ -n "$STACK_PID" ]] && break
  sleep 0.1
done
if [[ -z "$STACK_PID" ]]; then
  echo "soak.sh: the stack did not start (see $OUT/stack.log)" >&2
  exit 1
fi
echo "stack pid $STACK_PID" >>"$OUT/run.txt"
python3 "$ROOT/scripts/soak_listener.py" --pid "$STACK_PID" --out "$OUT" --duration-s "$(( RUN_S + 5 ))" \
  --interval-s "${SOAK_INTERVAL_S:-300}" --sample-s "${SOAK_SAMPLE_S:-10}" --warmup-s "${SOAK_WARMUP_S:-300}" \
  >"$OUT/listener.log" 2>&1 || echo "soak.sh: the listener failed (see $OUT/listener.log)" >&2
set +e
wait "$TIMEOUT_PID"
STATUS=$?
set -e
STACK_PID=""
echo "stack exit status $STATUS, ended $(date -u +%FT%TZ), load at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/run.txt"
rm -rf "$OUT/bin"   # the copies only served the run
[[ -f "$OUT/report.md" ]] && cat "$OUT/report.md"
if [[ $STATUS == 0 && -f "$OUT/report.md" && $RUN_S -ge 3600 ]]; then
  {
    echo "# Soak (\`scripts/soak.sh\`)"
    echo
    echo "> Figures as last measured on $(date -u '+%F %H:%M UTC') (commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)) by scripts/soak.sh ($MINUTES min); regenerated by that script."
    echo "> $(tail -1 "$OUT/run.txt")"
    echo
    echo "What it shows: [../tests.md](../tests.md#soak-not-in-ci). The run's folder: \`${OUT#"$ROOT/"}\`."
    echo
    cat "$OUT/report.md"
  } >"$ROOT/docs/results/soak.md.tmp" && mv "$ROOT/docs/results/soak.md.tmp" "$ROOT/docs/results/soak.md" \
    && echo "[soak] report written to docs/results/soak.md"
fi
echo "[soak] report folder: $OUT"
exit "$STATUS"
