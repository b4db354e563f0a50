#!/usr/bin/env bash
# Runs the guidance evaluation (`needle_nav evaluate`: the nodes' own state machines on seeded
# digital patients, and the shared ExtMarker recordings) and writes its figures where the docs
# read them: docs/results/guidance-evaluation.json (the command's output) and .md (tables).
# Usage: scripts/evaluate-guidance.sh [--trials N] [--tracking-trials N]   (defaults 500, 20)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
source "$ROOT/.setup/env.sh"
cd "$ROOT"
trials=500 tracking=20
while [[ $# -gt 0 ]]; do
  case "$1" in
    --trials) trials="$2"; shift 2 ;;
    --tracking-trials) tracking="$2"; shift 2 ;;
    *) echo "usage: $0 [--trials N] [--tracking-trials N]" >&2; exit 2 ;;
  esac
done
cargo build --release --locked -p needle_nav
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
start=$(date +%s)
target/release/needle_nav evaluate --trials "$trials" --tracking-trials "$tracking" > "$out"
seconds=$(( $(date +%s) - start ))
mkdir -p docs/results
cp "$out" docs/results/guidance-evaluation.json
python scripts/guidance_results.py docs/results/guidance-evaluation.json \
  --command "needle_nav evaluate --trials $trials --tracking-trials $tracking" --seconds "$seconds" \
  > docs/results/guidance-evaluation.md
echo "[evaluate] ${seconds} s; figures in docs/results/guidance-evaluation.md"
