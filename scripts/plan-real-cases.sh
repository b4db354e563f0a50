#!/usr/bin/env bash
# Plans the real cases (cases/*, scans in ../shared/data) with the vessel network and draws the
# report pictures: docs/planning/<case>/plan.json and plan.png are committed; the layer NIfTIs stay
# in out/planning/<case>/ (ignored by git). Extra arguments go to `needle_nav plan` (e.g. --no-network).
# The plans' figures are then summarised in docs/results/planning.md (scripts/plan_results.py).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${NEEDLE_NAV_BIN:-$ROOT/target/release/needle_nav}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$BIN" ]] || { echo "$BIN not built: cargo build --release --locked" >&2; exit 1; }
CASES=(thorax_ct_lung_lesion chest_cta_lung_point)
for case in "${CASES[@]}"; do
  work="out/planning/$case"
  docs="docs/planning/$case"
  rm -rf "$work"
  mkdir -p "$work" "$docs"
  rc=0
  "$BIN" plan --case "cases/$case" --out "$work" "$@" || rc=$?
  # 3: refused, with plan.json written (the cropped CTA cannot reach the skin).
  if [[ $rc != 0 && $rc != 3 ]]; then
    echo "needle_nav plan failed on $case (exit $rc)" >&2
    exit "$rc"
  fi
  cp "$work/plan.json" "$docs/plan.json"
  "$PY" scripts/plan_picture.py "$work" --out "$docs/plan.png" --title "$case:"
  echo "$case: exit $rc, $(du -k "$docs/plan.png" | cut -f1) kB picture"
done
"$PY" scripts/plan_results.py "${CASES[@]}" --out docs/results/planning.md
echo "figures written to docs/results/planning.md"
