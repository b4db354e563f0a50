//! Accuracy of the vessel segmentation (`needle_nav evaluate-segmentation`): the real-data gates
//! of issue 12 on the real scans in ../shared/data (TotalSegmentator references: agreement with
//! that model, not clinical truth; see [`super::real_gates`]) and Dice per class against
//! digital-patient ground truth (contrast and plain CT), each with and without the HU-window
//! refinement, the latter beside the classic threshold-plus-region-growing extraction (which
//! only says "vessel or not").

use super::pipeline::{SegmentationOptions, VesselSegmenter};
use super::real_gates::{self, RealCaseScore, VARIANTS};
use crate::classic::{threshold_region_growing, ClassicOptions};
use crate::metrics::{dice, dice_any};
use crate::model_info::CLASS_NAMES;
use needle_nav_core::volume::Volume;
use needle_nav_sim::phantom::{MotionState, Phantom, PhantomConfig};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

#[derive(Debug, Clone, Serialize)]
pub struct ClassScore {
    pub class: String,
    pub reference_voxels: u64,
    /// Network labels only.
    pub dice_network: Option<f64>,
    /// After the HU-window refinement (default pass limit).
    pub dice_refined: Option<f64>,
    /// After the refinement repeated until nothing changes (the method as written).
    pub dice_refined_unbounded: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CaseScore {
    pub case: String,
    pub reference: String,
    pub contrast_ct: bool,
    pub detected_contrast: bool,
    pub classes: Vec<ClassScore>,
    /// "Any vessel" Dice where the reference labels every vessel (digital patients).
    pub any_vessel_network: Option<f64>,
    pub any_vessel_refined: Option<f64>,
    pub any_vessel_classic: Option<f64>,
    pub segmentation_seconds: f64,
    pub classic_seconds: f64,
}

/// Version of the JSON written by `--json` (see README "Evaluation" under vessel segmentation);
/// raised when a field changes meaning or goes.
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Debug, Clone, Serialize)]
pub struct SegmentationEvaluation {
    pub schema_version: u32,
    pub model: String,
    pub shared_data: String,
    /// Digital patients (ground truth), each as contrast and as plain CT; empty with `--real-only`.
    pub digital_patients: Vec<CaseScore>,
    /// The real cases with their gates and confusion tables, always in the same order.
    pub real_cases: Vec<RealCaseScore>,
    /// Digital patients that could not be made.
    pub skipped: Vec<String>,
    pub digital_patient_seconds: f64,
    pub real_case_seconds: f64,
}

/// One evaluation case: a CT and its reference labels (already mapped to 0..=3) on the same grid.
struct Case {
    name: String,
    reference: String,
    contrast_ct: bool,
    ct: Volume<f32>,
    truth: Volume<u8>,
    /// Classes the reference labels (others are unlabelled there and not scored).
    scored: Vec<u8>,
    /// Whether every vessel is labelled (then "any vessel" is meaningful).
    complete: bool,
}

pub fn evaluate(
    segmenter: &mut VesselSegmenter,
    model_name: &str,
    shared_data: &Path,
    phantom_seeds: &[u64],
) -> SegmentationEvaluation {
    let started = Instant::now();
    let real_cases = real_gates::evaluate_real(segmenter, shared_data);
    let real_case_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut cases = Vec::new();
    let mut skipped = Vec::new();
    for seed in phantom_seeds {
        for contrast in [true, false] {
            match phantom_case(*seed, contrast) {
                Ok(c) => cases.push(score(segmenter, &c)),
                Err(e) => skipped.push(format!("digital patient {seed}: {e}")),
            }
        }
    }
    SegmentationEvaluation {
        schema_version: SCHEMA_VERSION,
        model: model_name.into(),
        shared_data: shared_data.display().to_string(),
        digital_patients: cases,
        real_cases,
        skipped,
        digital_patient_seconds: started.elapsed().as_secs_f64(),
        real_case_seconds,
    }
}

fn score(segmenter: &mut VesselSegmenter, case: &Case) -> CaseScore {
    let started = Instant::now();
    let options =
        SegmentationOptions { keep_unrefined: true, keep_unbounded_refinement: true, ..SegmentationOptions::new("") };
    let result = segmenter.segment(&case.ct, &options, &mut |_, _, _| {});
    let seconds = started.elapsed().as_secs_f64();
    let t = Instant::now();
    let dims = case.ct.geometry.dims;
    let classic = threshold_region_growing(&case.ct.data, dims, &ClassicOptions::default());
    let classic_seconds = t.elapsed().as_secs_f64();
    let empty = || vec![0; case.truth.data.len()];
    let (refined, network, unbounded, detected) = match result {
        Ok(r) => (
            r.labels.data,
            r.unrefined_labels.map(|v| v.data).unwrap_or_else(empty),
            r.unbounded_refined_labels.map(|v| v.data).unwrap_or_else(empty),
            r.contrast_enhanced,
        ),
        Err(e) => {
            tracing::error!(case = %case.name, "segmentation failed: {e}");
            (empty(), empty(), empty(), false)
        }
    };
    let truth = &case.truth.data;
    let classes = case
        .scored
        .iter()
        .map(|&l| ClassScore {
            class: CLASS_NAMES[l as usize].into(),
            reference_voxels: truth.iter().filter(|t| **t == l).count() as u64,
            dice_network: dice(&network, truth, l),
            dice_refined: dice(&refined, truth, l),
            dice_refined_unbounded: dice(&unbounded, truth, l),
        })
        .collect();
    let any = |labels: &[u8]| if case.complete { dice_any(labels, truth) } else { None };
    CaseScore {
        case: case.name.clone(),
        reference: case.reference.clone(),
        contrast_ct: case.contrast_ct,
        detected_contrast: detected,
        classes,
        any_vessel_network: any(&network),
        any_vessel_refined: any(&refined),
        any_vessel_classic: if case.complete && case.contrast_ct { dice_any(&classic, truth) } else { None },
        segmentation_seconds: seconds,
        classic_seconds,
    }
}

fn phantom_case(seed: u64, contrast: bool) -> Result<Case, needle_nav_sim::phantom::PhantomError> {
    // A grid unlike the training cases' (2 mm iso), so resampling is part of what is measured.
    let config =
        PhantomConfig { seed, contrast, dims: [224, 160, 120], spacing_mm: [1.6, 1.6, 2.5], ..Default::default() };
    let phantom = Phantom::new(config)?;
    let frame = phantom.render(&MotionState::REST, 0);
    let ct = Volume { geometry: frame.hu.geometry.clone(), data: frame.hu.data.iter().map(|v| *v as f32).collect() };
    Ok(Case {
        name: format!("digital patient {seed}, {}", if contrast { "contrast" } else { "plain" }),
        reference: "phantom ground truth".into(),
        contrast_ct: contrast,
        ct,
        truth: frame.labels,
        scored: vec![1, 2, 3],
        complete: true,
    })
}

/// The report printed by the command (tables pasted into the README and the training report).
pub fn markdown(e: &SegmentationEvaluation) -> String {
    let mut out = real_markdown(&e.real_cases);
    if !e.digital_patients.is_empty() {
        out += "\n";
        out += &digital_patient_markdown(&e.digital_patients);
    }
    out
}

fn format_value(value: Option<f64>, unit: &str) -> String {
    match value {
        None => "–".into(),
        Some(v) if unit == "voxels" => format!("{v:.0}"),
        Some(v) if unit == "mL" => format!("{v:.1} mL"),
        Some(v) if unit == "fraction" => format!("{:.1} %", 100.0 * v),
        Some(v) => format!("{v:.3}"),
    }
}

/// Gates, volumes and confusion tables of the real cases.
pub fn real_markdown(cases: &[RealCaseScore]) -> String {
    let mut out = String::from("#### Real-data gates\n\n");
    out += "| case | figure | gate | network | + HU refinement (3 passes) | + HU refinement until stable |\n";
    out += "|---|---|---|---|---|---|\n";
    for c in cases.iter().filter(|c| c.error.is_none()) {
        let Some(first) = c.variants.first() else { continue };
        for (n, f) in first.figures.iter().enumerate() {
            let gate = f.gate.as_ref().map_or("–".to_string(), |g| {
                format!("{} {}", if g.op == ">=" { "≥" } else { "≤" }, format_value(Some(g.threshold), &f.unit))
            });
            let cells: Vec<String> = c
                .variants
                .iter()
                .map(|v| {
                    let f = &v.figures[n];
                    let mark = match f.passed {
                        Some(true) => " ✓",
                        Some(false) => " ✗",
                        None => "",
                    };
                    format!("{}{mark}", format_value(f.value, &f.unit))
                })
                .collect();
            out += &format!("| {} | {} | {gate} | {} |\n", c.name, f.description, cells.join(" | "));
        }
    }
    let failed: Vec<&RealCaseScore> = cases.iter().filter(|c| c.error.is_some()).collect();
    if !failed.is_empty() {
        out += "\n| case | not scored |\n|---|---|\n";
        for c in failed {
            out += &format!("| {} | {} |\n", c.name, c.error.as_deref().unwrap_or_default().replace('|', "\\|"));
        }
    }
    out += "\n| case | grid | detected phase | artery / vein / aorta, network | + refinement (3 passes) | + until stable | seconds |\n|---|---|---|---|---|---|---|\n";
    for c in cases.iter().filter(|c| c.error.is_none()) {
        let grid = c.dims.map_or("–".into(), |d| format!("{}×{}×{}", d[0], d[1], d[2]));
        let phase = match c.detected_contrast {
            Some(true) => "contrast",
            Some(false) => "plain",
            None => "–",
        };
        let volumes: Vec<String> = c
            .variants
            .iter()
            .map(|v| {
                let ml = &v.label_volumes_ml;
                format!("{:.1} / {:.1} / {:.1} mL", ml[1], ml[2], ml[3])
            })
            .collect();
        out += &format!("| {} | {grid} | {phase} | {} | {:.1} |\n", c.name, volumes.join(" | "), c.seconds);
    }
    out += "\n#### Class confusion (reference voxels by the label they got)\n";
    for c in cases.iter().filter(|c| c.error.is_none()) {
        for v in &c.variants {
            let title = VARIANTS.iter().find(|(id, _)| *id == v.variant).map_or(v.variant.as_str(), |(_, d)| d);
            out += &format!("\n{}, {title}:\n\n", c.name);
            out += "| reference | voxels | background | artery | vein | aorta |\n|---|---|---|---|---|---|\n";
            for r in &v.confusion {
                let cells: Vec<String> = r
                    .labelled
                    .iter()
                    .map(|n| {
                        if r.voxels == 0 {
                            "0".to_string()
                        } else {
                            format!("{n} ({:.1} %)", 100.0 * *n as f64 / r.voxels as f64)
                        }
                    })
                    .collect();
                out += &format!("| {} | {} | {} |\n", r.structure, r.voxels, cells.join(" | "));
            }
        }
    }
    out
}

fn digital_patient_markdown(cases: &[CaseScore]) -> String {
    let f = |d: Option<f64>| d.map(|v| format!("{v:.3}")).unwrap_or_else(|| "–".into());
    let mut out = String::from(
        "#### Digital patients\n\n| case | reference | class | ref. voxels | Dice network | + HU refinement (3 passes) | + HU refinement until stable |\n|---|---|---|---|---|---|---|\n",
    );
    for c in cases {
        for s in &c.classes {
            out += &format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                c.case,
                c.reference,
                s.class,
                s.reference_voxels,
                f(s.dice_network),
                f(s.dice_refined),
                f(s.dice_refined_unbounded)
            );
        }
    }
    out += "\n| case | any vessel: network | + refinement (3 passes) | classic threshold + region growing | network s | classic s |\n|---|---|---|---|---|---|\n";
    for c in cases.iter().filter(|c| c.any_vessel_network.is_some()) {
        out += &format!(
            "| {} | {} | {} | {} | {:.2} | {:.2} |\n",
            c.case,
            f(c.any_vessel_network),
            f(c.any_vessel_refined),
            f(c.any_vessel_classic),
            c.segmentation_seconds,
            c.classic_seconds
        );
    }
    out
}
