//! Accuracy of the vessel segmentation (`needle_nav evaluate-segmentation`): Dice per class
//! against TotalSegmentator's reference labels in ../shared/data (agreement with that model,
//! not clinical truth) and against digital-patient ground truth (contrast and plain CT), each
//! with and without the HU-window refinement, beside the classic threshold-plus-region-growing
//! extraction (which only says "vessel or not").

use super::pipeline::{SegmentationOptions, VesselSegmenter};
use crate::core::phantom::{MotionState, Phantom, PhantomConfig};
use crate::core::segmentation::classic::{threshold_region_growing, ClassicOptions};
use crate::core::segmentation::metrics::{dice, dice_any};
use crate::core::segmentation::model_info::CLASS_NAMES;
use crate::imaging::nifti;
use crate::imaging::volume::Volume;
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

#[derive(Debug, Clone, Serialize)]
pub struct SegmentationEvaluation {
    pub model: String,
    pub cases: Vec<CaseScore>,
    pub skipped: Vec<String>,
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
    let mut cases = Vec::new();
    let mut skipped = Vec::new();
    for seed in phantom_seeds {
        for contrast in [true, false] {
            match phantom_case(*seed, contrast) {
                Ok(c) => cases.push(c),
                Err(e) => skipped.push(format!("digital patient {seed}: {e}")),
            }
        }
    }
    for loader in [chest_cta_case, abdomen_case] {
        match loader(shared_data) {
            Ok(c) => cases.push(c),
            Err(e) => skipped.push(e),
        }
    }
    let scores = cases.iter().map(|c| score(segmenter, c)).collect();
    SegmentationEvaluation { model: model_name.into(), cases: scores, skipped }
}

fn score(segmenter: &mut VesselSegmenter, case: &Case) -> CaseScore {
    let started = Instant::now();
    let options = SegmentationOptions { keep_unrefined: true, ..SegmentationOptions::new("") };
    let result = segmenter.segment(&case.ct, &options, &mut |_, _, _| {});
    let seconds = started.elapsed().as_secs_f64();
    let unbounded_options = SegmentationOptions { refinement_max_passes: usize::MAX, ..SegmentationOptions::new("") };
    let unbounded = segmenter
        .segment(&case.ct, &unbounded_options, &mut |_, _, _| {})
        .map(|r| r.labels.data)
        .unwrap_or_else(|_| vec![0; case.truth.data.len()]);
    let t = Instant::now();
    let dims = case.ct.geometry.dims;
    let classic = threshold_region_growing(&case.ct.data, dims, &ClassicOptions::default());
    let classic_seconds = t.elapsed().as_secs_f64();
    let (refined, network, detected) = match &result {
        Ok(r) => (
            r.labels.data.clone(),
            r.unrefined_labels.as_ref().map(|v| v.data.clone()).unwrap_or_default(),
            r.contrast_enhanced,
        ),
        Err(e) => {
            tracing::error!(case = %case.name, "segmentation failed: {e}");
            (vec![0; case.truth.data.len()], vec![0; case.truth.data.len()], false)
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

fn phantom_case(seed: u64, contrast: bool) -> Result<Case, String> {
    // A grid unlike the training cases' (2 mm iso), so resampling is part of what is measured.
    let config =
        PhantomConfig { seed, contrast, dims: [224, 160, 120], spacing_mm: [1.6, 1.6, 2.5], ..Default::default() };
    let phantom = Phantom::new(config).map_err(|e| e.to_string())?;
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

fn read_pair(
    shared: &Path,
    ct: &str,
    labels: &str,
    map: impl Fn(f32) -> u8,
) -> Result<(Volume<f32>, Volume<u8>), String> {
    let ct_path = shared.join(ct);
    let lab_path = shared.join(labels);
    let ct = nifti::read(&ct_path).map_err(|e| format!("{}: {e}", ct_path.display()))?;
    let lab = nifti::read(&lab_path).map_err(|e| format!("{}: {e}", lab_path.display()))?;
    if lab.geometry.dims != ct.geometry.dims {
        return Err(format!("{} and {} have different grids", ct_path.display(), lab_path.display()));
    }
    let truth = Volume { geometry: ct.geometry.clone(), data: lab.data.iter().map(|v| map(*v)).collect() };
    Ok((Volume { geometry: ct.geometry, data: ct.data }, truth))
}

fn chest_cta_case(shared: &Path) -> Result<Case, String> {
    let (ct, truth) = read_pair(
        shared,
        "chest_cta_pulmonary_artery/ct_cropped.nii.gz",
        "chest_cta_pulmonary_artery/pulmonary_artery.nii.gz",
        |v| if v > 0.0 { 1 } else { 0 },
    )?;
    Ok(Case {
        name: "chest CTA (real)".into(),
        reference: "TotalSegmentator pulmonary artery".into(),
        contrast_ct: true,
        ct,
        truth,
        scored: vec![1],
        complete: false,
    })
}

fn abdomen_case(shared: &Path) -> Result<Case, String> {
    // TotalSegmentator v2 ids: 52 aorta, 63 inferior vena cava, 64 portal and splenic vein.
    let (ct, truth) =
        read_pair(shared, "abdomen_ct_vessels/example_ct_sm.nii.gz", "abdomen_ct_vessels/example_seg.nii.gz", |v| {
            match v.round() as i32 {
                52 => 3,
                63 | 64 => 2,
                _ => 0,
            }
        })?;
    Ok(Case {
        name: "abdomen CT 30 slices, non-contrast (real)".into(),
        reference: "TotalSegmentator aorta, IVC + portal/splenic vein".into(),
        contrast_ct: false,
        ct,
        truth,
        scored: vec![2, 3],
        complete: false,
    })
}

/// The table printed by the command and pasted into the README.
pub fn markdown(e: &SegmentationEvaluation) -> String {
    let f = |d: Option<f64>| d.map(|v| format!("{v:.3}")).unwrap_or_else(|| "–".into());
    let mut out = String::from(
        "| case | reference | class | ref. voxels | Dice network | + HU refinement (3 passes) | + HU refinement until stable |\n|---|---|---|---|---|---|---|\n",
    );
    for c in &e.cases {
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
    for c in e.cases.iter().filter(|c| c.any_vessel_network.is_some()) {
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
