#!/usr/bin/env bash
# Coverage-guided fuzzing of needle_nav's parsers and input handlers with libFuzzer, on the
# stable toolchain (see README "Fuzzing" for why this way and what each target feeds).
#
#   scripts/fuzz.sh                    every target, 600 s each, one after the other
#   scripts/fuzz.sh TARGET [SECONDS]   one target (default 600 s)
#   scripts/fuzz.sh --smoke [SECONDS]  CI: every target runs its seed corpus and regression
#                                      inputs once, then fuzzes SECONDS (default 3); fails on a crash
#   scripts/fuzz.sh --build            build only
#   scripts/fuzz.sh --list             the targets
#
# Long runs use libFuzzer's fork mode, so that a crash is saved (fuzz/artifacts/TARGET/) and the
# run goes on. New inputs go to fuzz/work/TARGET/ (not committed; the seeds in fuzz/corpus/ are).
# The log of a run is fuzz/work/TARGET.log; its last status line has executions, coverage and
# the oom/timeout/crash counts. FUZZ_NICE (default 10) is the nice level of the fuzzer;
# FUZZ_NO_BUILD=1 runs the binaries as they are (no rebuild after a source change).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ="$ROOT/fuzz"
TARGETS=(dicom_series nifti bag param_yaml case_file register_json tracker_samples segment_request)
NICE="${FUZZ_NICE:-10}"

# libFuzzer itself is C++ (built by libfuzzer-sys): a C++ compiler is the only system need.
ensure_tools() {
  if ! command -v c++ >/dev/null 2>&1; then
    echo "fuzz.sh: installing a C++ compiler for libFuzzer (Debian g++)"
    local sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq g++ >/dev/null
  fi
  command -v cargo >/dev/null || { echo "fuzz.sh: cargo (stable Rust) is required" >&2; exit 2; }
}

HOST="$(rustc -vV | sed -n 's/^host: //p')"
# The instrumentation cargo-fuzz adds, without its nightly-only sanitizer flags. --target keeps
# these flags off build scripts and proc macros (they run on the host without libFuzzer).
# Debug assertions bring overflow checks: a wrapped size is a bug to find, not to hide.
SANCOV_FLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth \
-Cdebug-assertions -Coverflow-checks -Cforce-frame-pointers=yes"
# FUZZ_TARGET_DIR: another build folder (e.g. to rebuild while binaries of this one run).
TARGET_DIR="${FUZZ_TARGET_DIR:-$FUZZ/target}"
BIN_DIR="$TARGET_DIR/$HOST/release"

build() {
  if [[ -n "${FUZZ_NO_BUILD:-}" ]]; then return; fi  # run the binaries as they are built
  ensure_tools
  echo "fuzz.sh: building the fuzz targets (first build compiles every dependency with coverage instrumentation)"
  RUSTFLAGS="$SANCOV_FLAGS" CARGO_TARGET_DIR="$TARGET_DIR" nice -n "$NICE" \
    cargo build --release --locked --manifest-path "$FUZZ/Cargo.toml" --target "$HOST" --bins
}

# Options every run shares: 10 s per input is a hang, 2 GiB a memory blow-up.
common_args() {
  local t="$1" args=(-timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
  [[ -f "$FUZZ/dict/$t.dict" ]] && args+=("-dict=$FUZZ/dict/$t.dict")
  printf '%s\n' "${args[@]}"
}

run_one() {
  local t="$1" seconds="$2"
  mkdir -p "$FUZZ/work/$t" "$FUZZ/artifacts/$t" "$FUZZ/corpus/$t"
  local log="$FUZZ/work/$t.log"
  echo "fuzz.sh: $t for ${seconds} s (log $log)"
  mapfile -t args < <(common_args "$t")
  # Scratch files on tmpfs: the targets write their input to disk for every execution.
  TMPDIR=/dev/shm nice -n "$NICE" "$BIN_DIR/$t" "${args[@]}" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 \
    -ignore_ooms=1 -max_total_time="$seconds" -artifact_prefix="$FUZZ/artifacts/$t/" \
    "$FUZZ/work/$t" "$FUZZ/corpus/$t" >"$log" 2>&1 || true
  summarize "$t"
}

summarize() {
  local t="$1" log="$FUZZ/work/$1.log"
  local status
  status="$(grep -E '^#[0-9]+: cov:' "$log" | tail -1 || true)"
  local artifacts
  artifacts="$(find "$FUZZ/artifacts/$t" -type f | wc -l)"
  echo "fuzz.sh: $t: ${status:-no status line, see $log}; artifacts: $artifacts"
}

smoke() {
  local seconds="$1" failed=0
  for t in "${TARGETS[@]}"; do
    mapfile -t args < <(common_args "$t")
    local inputs=("$FUZZ/corpus/$t")
    [[ -d "$FUZZ/regressions/$t" ]] && inputs+=("$FUZZ/regressions/$t")
    local scratch; scratch="$(mktemp -d)"
    # The seeds and regression inputs are copied in: libFuzzer adds new inputs to the first folder.
    for d in "${inputs[@]}"; do cp -r "$d/." "$scratch/"; done
    if TMPDIR=/dev/shm nice -n "$NICE" "$BIN_DIR/$t" "${args[@]}" -max_total_time="$seconds" \
      -artifact_prefix="$scratch/crash-" "$scratch" >"$scratch.log" 2>&1; then
      echo "fuzz.sh smoke: $t ok ($(grep -oE 'stat::number_of_executed_units: [0-9]+' "$scratch.log" | grep -oE '[0-9]+$') executions)"
    else
      echo "fuzz.sh smoke: $t FAILED; log:" >&2
      tail -40 "$scratch.log" >&2
      failed=1
    fi
    rm -rf "$scratch" "$scratch.log"
  done
  return "$failed"
}

case "${1:-all}" in
  --list) printf '%s\n' "${TARGETS[@]}" ;;
  --build) build ;;
  --smoke) build; smoke "${2:-3}" ;;
  all) build; for t in "${TARGETS[@]}"; do run_one "$t" "${2:-600}"; done ;;
  *)
    [[ " ${TARGETS[*]} " == *" $1 "* ]] || { echo "fuzz.sh: unknown target $1 (--list)" >&2; exit 2; }
    build; run_one "$1" "${2:-600}" ;;
esac
