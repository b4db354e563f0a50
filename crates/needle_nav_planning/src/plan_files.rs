//! The planner's work between the segmentation service and the plan message, without ROS:
//! where the CT and target come from (a case folder or explicit parameters), loading the CT and
//! the vessel labels the service wrote (NIfTI or DICOM SEG), and the path search of `core::planning`.

use crate::config::TrajectoryPlannerConfig;
use crate::{
    plan_on_ct, CostWeights, CtAnatomy, HardLimits, LayerMargins, ObstacleOptions, PathTerms, PlanError,
    PlannerOptions, Planning,
};
use nalgebra::{Point3, Vector3};
use needle_nav_core::volume::{Geometry, Volume};
use needle_nav_imaging::{dicom_seg, dicom_source, nifti};
use needle_nav_segmentation::outputs::{surface_points, vessel_segment_classes, VesselPoint};
use needle_nav_segmentation::pipeline::load_input;
use needle_nav_segmentation::request;
use std::path::{Path, PathBuf};

/// What to plan on.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanningInput {
    pub ct_path: PathBuf,
    /// CT frame (LPS) [mm].
    pub target_mm: Point3<f64>,
    /// Lesion radius around the target [mm] (0: a point target).
    pub lesion_radius_mm: f64,
    /// The case's own approach (case.json `planning.approach_direction`, unit, LPS, target -> skin),
    /// e.g. posterior for a lesion planned with the patient prone; None: the parameters'.
    pub approach_direction: Option<Vector3<f64>>,
    /// The case's own cone (case.json `planning.max_angle_deg`).
    pub max_angle_deg: Option<f64>,
}

impl PlanningInput {
    /// The planner options with this input's lesion radius and the case's own approach, if any.
    pub fn options(&self, options: &PlannerOptions) -> PlannerOptions {
        PlannerOptions {
            lesion_radius_mm: self.lesion_radius_mm,
            approach_direction: self.approach_direction.unwrap_or(options.approach_direction),
            max_angle_deg: self.max_angle_deg.unwrap_or(options.max_angle_deg),
            ..options.clone()
        }
    }

    /// Without `ignore_vessel_labels_in_lesion` the planner sees a point target: every label is an obstacle.
    fn with_lesion_rule(self, cfg: &TrajectoryPlannerConfig) -> PlanningInput {
        let lesion_radius_mm = if cfg.ignore_vessel_labels_in_lesion { self.lesion_radius_mm } else { 0.0 };
        PlanningInput { lesion_radius_mm, ..self }
    }
}

/// Why the planning input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PlanningInputError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    CaseFile { path: PathBuf, source: needle_nav_core::case_file::CaseFileError },
}

/// None when nothing is configured (no plan is made). The error as text, for callers that still
/// want a string (the ROS node until it moves to [`read_planning_input`]).
pub fn planning_input(cfg: &TrajectoryPlannerConfig) -> Result<Option<PlanningInput>, String> {
    read_planning_input(cfg).map_err(|e| e.to_string())
}

/// None when nothing is configured (no plan is made). A case folder's case.json is read as
/// [`needle_nav_core::case_file::CaseFile`].
pub fn read_planning_input(cfg: &TrajectoryPlannerConfig) -> Result<Option<PlanningInput>, PlanningInputError> {
    if !cfg.ct_case_dir.trim().is_empty() {
        let dir = Path::new(&cfg.ct_case_dir);
        let path = dir.join("case.json");
        let text =
            std::fs::read_to_string(&path).map_err(|source| PlanningInputError::Read { path: path.clone(), source })?;
        let case = text
            .parse::<needle_nav_core::case_file::CaseFile>()
            .map_err(|source| PlanningInputError::CaseFile { path: path.clone(), source })?;
        let planning = case.planning.clone().unwrap_or_default();
        // CaseFile::validate refused a zero or non-finite direction and an angle outside [0, 90].
        let approach = planning.approach_direction.map(|d| Vector3::from(d).normalize());
        let lesion = case.reference.lesion_centre_mm;
        return Ok(Some(
            PlanningInput {
                ct_path: dir.join(case.files.ct()),
                target_mm: Point3::new(lesion[0], lesion[1], lesion[2]),
                lesion_radius_mm: case.reference.lesion_radius_mm.unwrap_or(0.0),
                approach_direction: approach,
                max_angle_deg: planning.max_angle_deg,
            }
            .with_lesion_rule(cfg),
        ));
    }
    if cfg.ct_path.trim().is_empty() {
        return Ok(None);
    }
    let t = &cfg.target_point_m;
    Ok(Some(
        PlanningInput {
            ct_path: PathBuf::from(&cfg.ct_path),
            target_mm: Point3::new(t[0] * 1000.0, t[1] * 1000.0, t[2] * 1000.0),
            lesion_radius_mm: cfg.lesion_radius_m * 1000.0,
            approach_direction: None,
            max_angle_deg: None,
        }
        .with_lesion_rule(cfg),
    ))
}

pub fn planner_options(cfg: &TrajectoryPlannerConfig) -> PlannerOptions {
    let r = &cfg.entry_region_m;
    let d = &cfg.approach_direction;
    let m = &cfg.margins;
    let l = &cfg.limits;
    let w = &cfg.weights;
    let ob = &cfg.obstacles;
    PlannerOptions {
        obstacles: ObstacleOptions {
            bone_hu: cfg.bone_hu as f32,
            lung_hu: ob.lung_hu as f32,
            lung_vessel_min_diameter_mm: ob.lung_vessel_min_diameter_m * 1000.0,
            lung_vessel_max_diameter_mm: ob.lung_vessel_max_diameter_m * 1000.0,
            lung_vessel_vesselness: ob.lung_vessel_vesselness,
            airway_min_diameter_mm: ob.airway_min_diameter_m * 1000.0,
            contrast_vessel_hu: [ob.contrast_vessel_hu[0] as f32, ob.contrast_vessel_hu[1] as f32],
            contrast_vessel_max_growth_mm: ob.contrast_vessel_max_growth_m * 1000.0,
            detect_fissures: ob.detect_fissures,
            ..ObstacleOptions::default()
        },
        margins: LayerMargins {
            network_vessels_mm: cfg.safety_margin_m * 1000.0,
            contrast_vessels_mm: cfg.safety_margin_m * 1000.0,
            bone_mm: m.bone_m * 1000.0,
            mediastinum_mm: m.mediastinum_m * 1000.0,
            lung_vessels_mm: m.lung_vessels_m * 1000.0,
            airways_mm: m.airways_m * 1000.0,
        },
        limits: HardLimits {
            instrument_length_mm: cfg.instrument_length_m * 1000.0,
            max_pleural_crossings: l.max_pleural_crossings,
            refuse_fissure_crossings: l.refuse_fissure_crossings,
            max_pleural_angle_deg: l.max_pleural_angle_deg,
            rib_margin_mm: l.rib_margin_m * 1000.0,
            chest_wall_depth_mm: l.chest_wall_depth_m * 1000.0,
        },
        weights: CostWeights {
            clearance: w.clearance,
            comfortable_clearance_mm: w.comfortable_clearance_m * 1000.0,
            lung_length_per_10mm: w.lung_length_per_cm,
            pleural_angle_per_90deg: w.pleural_angle,
            length_per_100mm: w.length_per_10cm,
            approach_angle_per_90deg: w.approach_angle,
        },
        max_angle_deg: cfg.max_angle_deg,
        approach_direction: Vector3::new(d[0], d[1], d[2]),
        directions: cfg.directions as usize,
        entry_region_mm: Some([r[0], r[1], r[2], r[3], r[4], r[5]].map(|v| v * 1000.0)),
        alternatives: cfg.alternatives as usize,
        ..PlannerOptions::default()
    }
}

/// Side of the cubes the vessel surface is thinned to for display [mm].
pub const DISPLAY_CELL_MM: f64 = 4.0;

/// A planning run on loaded inputs: the layers and the plan (or why there is none), where the
/// layers were written, and the vessel surface the plan avoided, thinned for display.
#[derive(Debug)]
pub struct PlanningRun {
    pub planning: Planning,
    /// Layer name -> NIfTI written (empty when no output folder was given).
    pub layer_files: Vec<(String, PathBuf)>,
    pub vessel_points: Vec<VesselPoint>,
    pub ct_geometry: Geometry,
}

/// The CT and its vessel labels on the CT's grid. No labels file: no network labels (all zero).
/// The labels are a NIfTI label map on the CT's grid, or a DICOM Segmentation (BINARY, one
/// segment per vessel class, mapped by its property type code) whose frames lie on the CT's
/// grid and whose frame of reference is the CT's (checked when the CT is a DICOM series).
pub fn load_ct_and_labels(
    ct_path: &Path,
    labels_path: Option<&Path>,
    max_voxels: u64,
) -> Result<(Volume<f32>, Volume<u8>), String> {
    let request = request::input_kind(&ct_path.display().to_string()).map_err(|e| e.to_string())?;
    let (ct, _, _) = load_input(&request, max_voxels, &Default::default())
        .map_err(|e| format!("cannot load the planning CT: {e}"))?;
    let Some(labels_path) = labels_path else {
        return Ok((ct.clone(), Volume::filled(ct.geometry.clone(), 0u8)));
    };
    if dicom_seg::is_dicom_file(labels_path) {
        let ct_frame_of_reference = match &request {
            request::SegmentationInput::DicomDirectory(dir) => dicom_source::frame_of_reference(dir, &ct.geometry)
                .map_err(|e| format!("cannot match the planning CT's slices: {e}"))?,
            request::SegmentationInput::Nifti(_) => None,
        };
        let (labels, warnings) = dicom_seg::read_seg_on_grid(
            labels_path,
            &vessel_segment_classes(),
            &ct.geometry,
            ct_frame_of_reference.as_deref(),
        )
        .map_err(|e| e.to_string())?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        return Ok((ct, labels));
    }
    let labels = nifti::read(labels_path).map_err(|e| e.to_string())?;
    if labels.geometry.dims != ct.geometry.dims {
        return Err(format!(
            "the labels {} ({:?}) are not on the CT's grid ({:?})",
            labels_path.display(),
            labels.geometry.dims,
            ct.geometry.dims
        ));
    }
    let labels = Volume { geometry: ct.geometry.clone(), data: labels.data.iter().map(|v| *v as u8).collect() };
    Ok((ct, labels))
}

/// Writes every layer and the lung masks as uint8 NIfTI on the CT's grid into `dir/layers/`.
pub fn write_layers(dir: &Path, geometry: &Geometry, anatomy: &CtAnatomy) -> Result<Vec<(String, PathBuf)>, String> {
    let layers_dir = dir.join("layers");
    std::fs::create_dir_all(&layers_dir).map_err(|e| format!("{}: {e}", layers_dir.display()))?;
    let mut masks: Vec<(&str, &[bool])> = anatomy.layers.iter().map(|l| (l.layer.name(), l.mask.as_slice())).collect();
    masks.push(("aerated_lung", &anatomy.aerated_lung));
    masks.push(("lung_region", &anatomy.lung_region));
    masks.push(("fissures", &anatomy.fissures));
    let mut written = Vec::new();
    for (name, mask) in masks {
        let path = layers_dir.join(format!("{name}.nii.gz"));
        let data: Vec<u8> = mask.iter().map(|m| u8::from(*m)).collect();
        nifti::write(&path, geometry, &data, &format!("needle_nav obstacle layer {name}"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        written.push((name.to_string(), path));
    }
    Ok(written)
}

/// Loads the CT and the labels (which must share its grid; None: no network labels), plans, and
/// writes the layers into `output_dir` when given. Err: the inputs could not be used.
pub fn plan_from_files(
    input: &PlanningInput,
    labels_path: Option<&Path>,
    options: &PlannerOptions,
    max_voxels: u64,
    output_dir: Option<&Path>,
) -> Result<PlanningRun, String> {
    let (ct, labels) = load_ct_and_labels(&input.ct_path, labels_path, max_voxels)?;
    let options = input.options(options);
    let planning = plan_on_ct(&ct, &labels, input.target_mm, &options);
    let layer_files = match output_dir {
        Some(dir) => write_layers(dir, &ct.geometry, &planning.anatomy)?,
        None => Vec::new(),
    };
    Ok(PlanningRun {
        planning,
        layer_files,
        vessel_points: surface_points(&labels, DISPLAY_CELL_MM),
        ct_geometry: ct.geometry.clone(),
    })
}

/// plan.json: everything the plan used and found, in millimetres (the human-facing record; the
/// ROS message carries the same in SI units).
pub fn plan_json(
    run: &PlanningRun,
    input: &PlanningInput,
    label_map_path: Option<&Path>,
    options: &PlannerOptions,
    output_dir: &Path,
    timing_s: &[(&str, f64)],
) -> serde_json::Value {
    use serde_json::json;
    let rel = |p: &Path| p.strip_prefix(output_dir).unwrap_or(p).display().to_string();
    let file_of = |name: &str| run.layer_files.iter().find(|(n, _)| n == name).map(|(_, p)| rel(p));
    let layers: Vec<serde_json::Value> = run
        .planning
        .layers
        .iter()
        .map(|l| {
            json!({"name": l.layer.name(), "path": file_of(l.layer.name()), "voxels": l.voxels,
                   "volume_ml": l.volume_ml, "margin_mm": l.margin_mm, "lesion_voxels_ignored": l.lesion_voxels_ignored})
        })
        .collect();
    let (status, reason, chosen, alternatives, best_refused, counts) = match &run.planning.result {
        Ok(plan) => (
            "ok",
            format!(
                "best of {} passing paths ({} reaching the skin or the image edge, {} tried)",
                plan.passing, plan.reachable, plan.candidates
            ),
            Some(candidate_json(&plan.chosen)),
            plan.alternatives.iter().map(candidate_json).collect::<Vec<_>>(),
            None,
            Vec::new(),
        ),
        Err(e) => {
            let (best, counts) = match e {
                PlanError::NoSafePath { best, counts, .. } => (Some(candidate_json(best)), counts.clone()),
                _ => (None, Vec::new()),
            };
            ("refused", e.to_string(), None, Vec::new(), best, counts)
        }
    };
    let refused_layer = run.planning.result.as_ref().err().and_then(|e| e.refused_layer()).map(|l| l.name());
    json!({
        "status": status,
        "reason": reason,
        "refused_layer": refused_layer,
        "ct_path": input.ct_path.display().to_string(),
        "label_map_path": label_map_path.map(|p| p.display().to_string()),
        "target_mm": [input.target_mm.x, input.target_mm.y, input.target_mm.z],
        "lesion_radius_mm": input.lesion_radius_mm,
        "step_mm": options.step_mm,
        "layers": layers,
        "lung": {"aerated_path": file_of("aerated_lung"), "region_path": file_of("lung_region"),
                 "fissures_path": file_of("fissures"), "fissures_detected": run.planning.anatomy.fissures_detected},
        "chosen": chosen,
        "alternatives": alternatives,
        "best_refused": best_refused,
        "refusal_counts": counts.iter().map(|(k, n)| json!({"limit": k, "paths": n})).collect::<Vec<_>>(),
        "limits": options.limits,
        "margins": options.margins,
        "weights": options.weights,
        "obstacles": options.obstacles,
        "search": {"max_angle_deg": options.max_angle_deg, "directions": options.directions,
                   "approach_direction": [options.approach_direction.x, options.approach_direction.y, options.approach_direction.z],
                   "entry_region_mm": options.entry_region_mm, "proposed_entry_mm": options.proposed_entry_mm},
        "timing_s": timing_s.iter().map(|(k, v)| ((*k).to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    })
}

/// A human-readable account of the plan (millimetres and degrees).
pub fn plan_summary(run: &PlanningRun) -> String {
    let mut out = String::new();
    for l in &run.planning.layers {
        out += &format!(
            "layer {:<17} {:>9} voxels {:>8.1} ml, margin {:.1} mm{}\n",
            l.layer.name(),
            l.voxels,
            l.volume_ml,
            l.margin_mm,
            if l.lesion_voxels_ignored > 0 {
                format!(", {} inside the lesion ignored", l.lesion_voxels_ignored)
            } else {
                String::new()
            }
        );
    }
    let line = |tag: &str, p: &PathTerms| {
        let clear: Vec<String> =
            p.clearance_mm.iter().filter(|(_, c)| c.is_finite()).map(|(l, c)| format!("{} {c:.1}", l.name())).collect();
        format!(
            "{tag}: entry [{:.1}, {:.1}, {:.1}] mm, {:.1} mm long, lung {:.1} mm, {} pleural crossing(s), pleural angle {}, \
             rib clearance {:.1} mm, cost {:.3}; clearance mm: {}{}\n",
            p.entry_mm[0],
            p.entry_mm[1],
            p.entry_mm[2],
            p.length_mm,
            p.lung_length_mm,
            p.pleural_crossings,
            p.pleural_angle_deg.map_or("-".into(), |a| format!("{a:.0}°")),
            p.rib_clearance_mm,
            p.cost,
            clear.join(", "),
            if p.passes() {
                String::new()
            } else {
                format!("; refused: {}", p.refusals.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("; "))
            }
        )
    };
    match &run.planning.result {
        Ok(plan) => {
            out += &line("chosen", &plan.chosen);
            for (i, a) in plan.alternatives.iter().enumerate() {
                out += &line(&format!("alternative {}", i + 1), a);
            }
        }
        Err(e) => {
            out += &format!("refused: {e}\n");
            if let PlanError::NoSafePath { best, .. } = e {
                out += &line("best refused", best);
            }
        }
    }
    out
}

fn finite_or_null(v: f64) -> serde_json::Value {
    if v.is_finite() {
        serde_json::json!(v)
    } else {
        serde_json::Value::Null
    }
}

pub fn candidate_json(p: &PathTerms) -> serde_json::Value {
    use serde_json::json;
    let clearance: serde_json::Map<String, serde_json::Value> =
        p.clearance_mm.iter().map(|(l, c)| (l.name().to_string(), finite_or_null(*c))).collect();
    json!({
        "entry_mm": p.entry_mm, "target_mm": p.target_mm, "direction": p.direction,
        "length_mm": p.length_mm, "approach_angle_deg": p.approach_angle_deg,
        "clearance_mm": clearance, "min_clearance_mm": finite_or_null(p.min_clearance_mm),
        "nearest_layer": p.nearest_layer.map(|l| l.name()),
        "lung_length_mm": p.lung_length_mm, "pleural_crossings": p.pleural_crossings,
        "fissure_crossings": p.fissure_crossings, "pleural_angle_deg": p.pleural_angle_deg,
        "rib_clearance_mm": finite_or_null(p.rib_clearance_mm), "reaches_skin": p.reaches_skin,
        "cost": if p.passes() { json!(p.cost) } else { serde_json::Value::Null },
        "refusals": p.refusals.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "refused_layer": p.refused_layer().map(|l| l.name()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_and_lesion_come_from_the_case_or_the_parameters() {
        let dir = std::env::temp_dir().join(format!("nn_planning_input_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("case.json"),
            r#"{"reference": {"lesion_centre_mm": [1.0, 2.0, 3.0], "lesion_radius_mm": 7.5}, "files": {"ct_dicom_dir": "ct"}}"#,
        )
        .unwrap();
        let from_case = TrajectoryPlannerConfig { ct_case_dir: dir.display().to_string(), ..Default::default() };
        let input = planning_input(&from_case).unwrap().unwrap();
        assert_eq!(
            (input.ct_path, input.target_mm, input.lesion_radius_mm),
            (dir.join("ct"), Point3::new(1.0, 2.0, 3.0), 7.5)
        );
        let strict = TrajectoryPlannerConfig { ignore_vessel_labels_in_lesion: false, ..from_case };
        assert_eq!(planning_input(&strict).unwrap().unwrap().lesion_radius_mm, 0.0);
        let explicit = TrajectoryPlannerConfig {
            ct_path: "/x.nii.gz".into(),
            target_point_m: vec![0.01, -0.02, 0.03],
            lesion_radius_m: 0.004,
            ..Default::default()
        };
        let input = planning_input(&explicit).unwrap().unwrap();
        assert!((input.target_mm - Point3::new(10.0, -20.0, 30.0)).norm() < 1e-12 && input.lesion_radius_mm == 4.0);
        assert_eq!(planning_input(&TrajectoryPlannerConfig::default()).unwrap(), None);
        std::fs::write(dir.join("case.json"), "{}").unwrap();
        let err =
            planning_input(&TrajectoryPlannerConfig { ct_case_dir: dir.display().to_string(), ..Default::default() });
        assert!(err.unwrap_err().contains("missing field `reference`"));
        // A case's own approach (a posterior lesion, patient prone) overrides the parameters'.
        let case = |planning: &str| {
            std::fs::write(
                dir.join("case.json"),
                format!(r#"{{"reference": {{"lesion_centre_mm": [1, 2, 3]}}, "planning": {planning}}}"#),
            )
            .unwrap();
            planning_input(&TrajectoryPlannerConfig { ct_case_dir: dir.display().to_string(), ..Default::default() })
        };
        let input = case(r#"{"approach_direction": [0, 2, 0], "max_angle_deg": 60}"#).unwrap().unwrap();
        let o = input.options(&PlannerOptions::default());
        assert_eq!((o.approach_direction, o.max_angle_deg), (Vector3::new(0.0, 1.0, 0.0), 60.0));
        assert!(case(r#"{"approach_direction": [0, 0]}"#).unwrap_err().contains("approach_direction"));
        assert!(case(r#"{"max_angle_deg": 120}"#).unwrap_err().contains("max_angle_deg"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
