"""The training report: models/vessel_unet_report/report.md, composed from what the steps wrote there.

    python -m needle_nav_training.report --dir models/vessel_unet_report

Reads training.json (train_anatomy: settings, runs, history, calibration, held-out digital patients),
real_gates.md / real_gates.json (`needle_nav evaluate-segmentation --real-only`, the Rust pipeline the
nodes run) and realism.md (realism.py: real and digital slices side by side, HU per structure).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import CLASS_NAMES
from .stream import CONTRAST_PHASES, FOV_P

REAL_TRAINED = ("`abdomen_ct_vessels/example_ct_dicom_j2k/` (20-slice contrast abdomen series, portal venous) with "
                "`example_seg_dicom.nii.gz` (TotalSegmentator 52 aorta → aorta, 63 IVC and 64 portal/splenic vein → "
                "vein), at 2 mm, in 10 % of the batches (half as contrast, half synthesised non-contrast)")
REAL_EVAL_ONLY = ("`chest_cta_pulmonary_artery/` (pulmonary artery, heart), `abdomen_ct_vessels/example_ct.nii.gz` "
                  "with `example_seg_fast_force_split.nii.gz` (aorta, IVC, portal/splenic and iliac vessels), "
                  "`thorax_ct_dicom/` (no labels)")


def _fmt(d: dict | None) -> str:
    if not d:
        return "–"
    return " / ".join(f"{d.get(c, float('nan')):.3f}" for c in CLASS_NAMES[1:])


def compose(report_dir: Path) -> str:
    t = json.loads((report_dir / "training.json").read_text())
    s = t["settings"]
    out = ["# vessel_unet training report", ""]
    out.append(f"Seed {t['seed']}, git {t['git_commit']}, exported {t['date']}, torch {t['torch']} "
               f"(export), Python {t['python']}. Model: {t['model']['parameters']:,} parameters "
               f"(base width {t['model']['base']}), ONNX {t['model']['onnx_bytes'] / 1e6:.2f} MB, patch "
               f"{s['patch']}³ at 2 mm; onnxruntime vs PyTorch on the parity fixture: max |Δp| "
               f"{t['parity_max_abs_diff']:.1e}.")
    out += ["", "## Training runs", "",
            f"One schedule of {s['iterations']} iterations (batch {s['batch']} patches, AdamW, learning rate "
            f"{s['lr']} with 100 warm-up iterations and polynomial decay, cross-entropy + batch soft Dice), "
            "resumed from checkpoints across machines; the data stream is a function of seed and iteration only.",
            "", "| iterations | machine | data workers | wall clock |", "|---|---|---|---|"]
    for r in t.get("runs", []):
        out.append(f"| {r['from']}–{r['to']} | {r['machine']} | {r['workers']} | {r['seconds'] / 60:.1f} min |")
    out += ["", "![loss](loss_curve.png)", ""]
    out += ["## Data", "",
            "Every batch is a new digital patient (`anatomy.py`), rendered on the fly: "
            + ", ".join(f"{k} {v:.0%}" for k, v in FOV_P.items()) + " fields of view; 40 % synthesised non-contrast "
            "(rendered in a contrast phase, every blood pool lowered by its enhancement with the method's formula), "
            "20 % rendered non-contrast, 40 % contrast (" + ", ".join(CONTRAST_PHASES) + "): 60 % of the batches "
            "are plain CT, as the method asks. "
            f"{s['iterations']} batches = {s['iterations']} training patients (about 10 % of them replaced by the "
            "real series).", "",
            f"* **Real scans trained on:** {REAL_TRAINED}.",
            f"* **Real scans only evaluated on, never trained on:** {REAL_EVAL_ONLY}.",
            "* **Held-out digital patients:** seeds 30 000 000 + 1000·seed + i, never in the training stream "
            "(training patients are 10 000 000 + 100 000·seed + k).", ""]
    cal = t["calibration"]
    n = cal["normalisation"]
    out += ["## Calibration", "",
            f"Normalisation: clip [{n['clip_hu'][0]:.0f}, {n['clip_hu'][1]:.0f}] HU, then (HU − {n['mean_hu']:.1f}) / "
            f"{n['std_hu']:.1f} (body voxels, lungs included, of 12 calibration patients). HU windows of the "
            "refinement (p1–p99 of each class one voxel inside): contrast "
            + ", ".join(f"{k} [{v[0]:.0f}, {v[1]:.0f}]" for k, v in cal["windows"]["contrast"].items())
            + "; plain " + ", ".join(f"{k} [{v[0]:.0f}, {v[1]:.0f}]" for k, v in cal["windows"]["plain"].items())
            + ".", ""]
    out += ["## Held-out digital patients (network only, whole volumes, onnxruntime)", "",
            "Dice artery / vein / aorta, pooled per kind:", "", "| kind | artery / vein / aorta |", "|---|---|"]
    for kind, d in t["validation_summary"].items():
        out.append(f"| {kind} | {_fmt(d)} |")
    out += ["", "| case | kind | artery / vein / aorta |", "|---|---|---|"]
    for c in t["validation_cases"]:
        out.append(f"| {c['name']} | {c['kind']} | {_fmt(c['dice'])} |")
    out.append("")
    gates = report_dir / "real_gates.md"
    if gates.is_file():
        out += ["## Real scans (Rust pipeline, `needle_nav evaluate-segmentation --real-only`)", "",
                "Agreement with TotalSegmentator, not clinical accuracy. Recorded figures: `real_gates.json` "
                "(the regression test compares against them).", ""]
        out.append(gates.read_text().replace("\n# ", "\n### ").replace("\n## ", "\n### "))
    realism = report_dir / "realism.md"
    if realism.is_file():
        out += ["", "## Does the digital patient look like CT?", ""]
        body = realism.read_text().split("\n", 1)[1] if realism.read_text().startswith("# ") else realism.read_text()
        out.append(body.replace("\n## ", "\n### "))
    notes = report_dir / "notes.md"
    if notes.is_file():  # hand-written notes on the run (what the logs alone do not say)
        out += ["", notes.read_text()]
    return "\n".join(out) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dir", type=Path, required=True)
    a = p.parse_args(argv)
    (a.dir / "report.md").write_text(compose(a.dir))
    print(f"wrote {a.dir / 'report.md'}")


if __name__ == "__main__":
    main()
