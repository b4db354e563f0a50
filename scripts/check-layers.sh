#!/usr/bin/env bash
# Checks the workspace's layering from cargo's own dependency graph (normal dependencies only):
# each crate may use only the crates below it, and heavy dependencies stay where they are used.
# A violation names the crate and the dependency it must not have. Also: no import cycles between
# the modules inside a crate (scripts/module_cycles.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
fail=0
# crate: dependencies it must not have (directly or through others)
rules=(
  "needle_nav_core: r2r ort dicom-object dicom-pixeldata dicom-ul mcap openigtlink-rust needle_nav_imaging needle_nav_pacs needle_nav_sim needle_nav_segmentation needle_nav_planning needle_nav_igtl needle_nav_nodes needle_nav_bags needle_nav_ros"
  "needle_nav_dicom_guard: r2r ort dicom-object dicom-parser dicom-pixeldata dicom-ul mcap openigtlink-rust needle_nav_core needle_nav_imaging needle_nav_pacs needle_nav_sim needle_nav_segmentation needle_nav_planning needle_nav_igtl needle_nav_nodes needle_nav_bags needle_nav_ros"
  "needle_nav_imaging: r2r ort mcap dicom-ul openigtlink-rust needle_nav_pacs needle_nav_igtl needle_nav_sim needle_nav_segmentation needle_nav_planning needle_nav_nodes needle_nav_ros"
  "needle_nav_pacs: r2r ort mcap dicom-pixeldata openigtlink-rust needle_nav_core needle_nav_imaging needle_nav_sim needle_nav_segmentation needle_nav_planning needle_nav_igtl needle_nav_nodes needle_nav_bags needle_nav_ros"
  "needle_nav_sim: r2r ort mcap dicom-ul openigtlink-rust needle_nav_pacs needle_nav_igtl needle_nav_segmentation needle_nav_planning needle_nav_nodes needle_nav_ros"
  "needle_nav_segmentation: r2r mcap openigtlink-rust needle_nav_igtl needle_nav_planning needle_nav_nodes needle_nav_ros"
  "needle_nav_planning: r2r mcap openigtlink-rust needle_nav_igtl needle_nav_nodes needle_nav_ros"
  "needle_nav_igtl: r2r ort dicom-object dicom-ul mcap needle_nav_pacs needle_nav_imaging needle_nav_sim needle_nav_segmentation needle_nav_planning needle_nav_nodes needle_nav_bags needle_nav_ros"
  "needle_nav_nodes: r2r mcap needle_nav_bags needle_nav_ros"
  "needle_nav_bags: r2r ort dicom-object dicom-ul openigtlink-rust needle_nav_core needle_nav_pacs needle_nav_igtl needle_nav_ros"
  "needle_nav: r2r needle_nav_ros"
)
for rule in "${rules[@]}"; do
  crate="${rule%%:*}"
  deps="$(cargo tree --offline --locked -e normal -p "$crate" --prefix none --format '{p}' | awk '{print $1}' | sort -u)"
  for banned in ${rule#*:}; do
    if grep -qx "$banned" <<<"$deps"; then
      echo "[layers] $crate depends on $banned (not allowed: see ARCHITECTURE.md)"
      cargo tree --offline --locked -e normal -p "$crate" -i "$banned" 2>/dev/null | head -8
      fail=1
    fi
  done
done
# Inside each crate: no import cycles between its modules.
python3 scripts/module_cycles.py crates || fail=1
if [[ $fail == 0 ]]; then echo "[layers] every crate uses only the layers below it"; echo "layers: $(( ${#rules[@]} + 1 )) passed, 0 failed"; fi
exit $fail
