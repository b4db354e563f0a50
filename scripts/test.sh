#!/usr/bin/env bash
# Runs every test on a fresh machine: set-up (idempotent), build, Rust unit and integration
# tests, the crate layering, the rclpy graph/interop tests, and the colcon build check.
# Set NEEDLE_NAV_SKIP_COLCON=1 to skip the colcon check while iterating.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
source "$ROOT/.setup/env.sh"
cd "$ROOT"

# A private ROS domain for this run, localhost-only discovery.
export NEEDLE_NAV_TEST_DOMAIN="${NEEDLE_NAV_TEST_DOMAIN:-$(( 10 + RANDOM % 80 ))}"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
cleanup_shm() { command -v fastdds >/dev/null && fastdds shm clean >/dev/null 2>&1 || true; }
trap cleanup_shm EXIT

step() { printf '\n=== %s ===\n' "$*"; }

step "build (release)"
cargo build --release --locked

step "Rust tests: core, ROS shell, launch files, node processes (ROS domain $NEEDLE_NAV_TEST_DOMAIN)"
cargo test --release --locked

step "layering: no crate below the ROS shell pulls in ROS; the guidance core needs neither ONNX Runtime nor DICOM"
bash scripts/check-layers.sh

step "fuzz smoke: every fuzz target runs its seeds and regression inputs, then 3000 executions in all with seed 1 (scripts/fuzz.sh)"
bash scripts/fuzz.sh --smoke

step "digital patient for the vessel network (training/tests/test_anatomy.py; numpy/scipy only: the torch part runs in .venv-training)"
PYTHONPATH=training python -m pytest -q -p no:cacheprovider --noconftest training/tests/test_anatomy.py

step "rclpy graph and interop tests"
NEEDLE_NAV_TEST_DOMAIN=$(( NEEDLE_NAV_TEST_DOMAIN + 1 )) python -m pytest -q -p no:cacheprovider tests/python

if [[ -z "${NEEDLE_NAV_SKIP_COLCON:-}" ]]; then
  step "colcon build of the package"
  NEEDLE_NAV_TEST_DOMAIN=$(( NEEDLE_NAV_TEST_DOMAIN + 2 )) bash scripts/check-colcon.sh
fi
step "all tests passed"
