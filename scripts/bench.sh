#!/usr/bin/env bash
# Runs the benchmarks and prints their figures (set-up and release build first).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
source "$ROOT/.setup/env.sh"
cd "$ROOT"
cargo build --release --locked
echo "=== digital patient generation ==="
python bench/bench_phantom.py
echo "=== tracker sample -> target latency ==="
bash bench/bench_latency.sh
echo "=== vessel segmentation, real thorax series (Rust vs Python onnxruntime vs classic) ==="
python bench/bench_segmentation.py
echo "=== guidance deadlines while a segmentation runs (none / normal / SCHED_IDLE) ==="
python bench/bench_segmentation_contention.py
echo "=== path planning on the real thorax series (Rust vs scipy distance transforms) ==="
python bench/bench_planning.py
echo "=== bag reading (needle_nav bag-info vs rosbags) ==="
python bench/bench_bags.py
