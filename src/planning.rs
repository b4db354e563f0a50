//! The planner's work between the segmentation service and the plan message, without ROS:
//! where the CT and target come from (a case folder or explicit parameters), loading the CT and
//! the vessel labels the service wrote, and the path search of `core::planning`.

use crate::config::TrajectoryPlannerConfig;
use crate::core::planning::{plan_path, PlanError, PlannedPath, PlannerOptions};
use crate::core::segmentation_request;
use crate::imaging::nifti;
use crate::imaging::volume::Volume;
use crate::segmentation::outputs::{surface_points, VesselPoint};
use crate::segmentation::pipeline::load_input;
use nalgebra::{Point3, Vector3};
use std::path::{Path, PathBuf};

/// What to plan on.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanningInput {
    pub ct_path: PathBuf,
    /// CT frame (LPS) [mm].
    pub target_mm: Point3<f64>,
    /// Lesion radius around the target [mm] (0: a point target).
    pub lesion_radius_mm: f64,
}

impl PlanningInput {
    /// Without `ignore_vessel_labels_in_lesion` the planner sees a point target: every label is an obstacle.
    fn with_lesion_rule(self, cfg: &TrajectoryPlannerConfig) -> PlanningInput {
        let lesion_radius_mm = if cfg.ignore_vessel_labels_in_lesion { self.lesion_radius_mm } else { 0.0 };
        PlanningInput { lesion_radius_mm, ..self }
    }
}

/// None when nothing is configured (no plan is made).
pub fn planning_input(cfg: &TrajectoryPlannerConfig) -> Result<Option<PlanningInput>, String> {
    if !cfg.ct_case_dir.trim().is_empty() {
        let dir = Path::new(&cfg.ct_case_dir);
        let text = std::fs::read_to_string(dir.join("case.json"))
            .map_err(|e| format!("cannot read {}: {e}", dir.join("case.json").display()))?;
        let case: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", dir.join("case.json").display()))?;
        let lesion = case["reference"]["lesion_centre_mm"]
            .as_array()
            .and_then(|a| (a.len() == 3).then(|| a.iter().filter_map(|v| v.as_f64()).collect::<Vec<_>>()))
            .filter(|v| v.len() == 3)
            .ok_or_else(|| format!("{}: no reference.lesion_centre_mm", dir.join("case.json").display()))?;
        let ct_dir = case["files"]["ct_dicom_dir"].as_str().unwrap_or("ct");
        let radius = case["reference"]["lesion_radius_mm"].as_f64().filter(|r| r.is_finite() && *r >= 0.0);
        return Ok(Some(
            PlanningInput {
                ct_path: dir.join(ct_dir),
                target_mm: Point3::new(lesion[0], lesion[1], lesion[2]),
                lesion_radius_mm: radius.unwrap_or(0.0),
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
        }
        .with_lesion_rule(cfg),
    ))
}

pub fn planner_options(cfg: &TrajectoryPlannerConfig) -> PlannerOptions {
    let r = &cfg.entry_region_m;
    let d = &cfg.approach_direction;
    PlannerOptions {
        safety_margin_mm: cfg.safety_margin_m * 1000.0,
        max_depth_mm: cfg.max_depth_m * 1000.0,
        max_angle_deg: cfg.max_angle_deg,
        approach_direction: Vector3::new(d[0], d[1], d[2]),
        bone_hu: cfg.bone_hu as f32,
        directions: cfg.directions as usize,
        entry_region_mm: Some([r[0], r[1], r[2], r[3], r[4], r[5]].map(|v| v * 1000.0)),
        ..PlannerOptions::default()
    }
}

/// Side of the cubes the vessel surface is thinned to for display [mm].
pub const DISPLAY_CELL_MM: f64 = 4.0;

/// A planning run on loaded inputs: the plan (or why there is none) and the vessel surface the
/// plan avoided, thinned for display.
#[derive(Debug)]
pub struct PlanningRun {
    pub result: Result<PlannedPath, PlanError>,
    pub vessel_points: Vec<VesselPoint>,
}

/// The CT and its vessel labels on the CT's grid.
pub fn load_ct_and_labels(
    ct_path: &Path,
    labels_path: &Path,
    max_voxels: u64,
) -> Result<(Volume<f32>, Volume<u8>), String> {
    let request = segmentation_request::input_kind(&ct_path.display().to_string()).map_err(|e| e.to_string())?;
    let (ct, _, _) = load_input(&request, max_voxels, &Default::default())
        .map_err(|e| format!("cannot load the planning CT: {e}"))?;
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

/// Loads the CT and the labels (which must share its grid) and plans. Err: the inputs could not be used.
pub fn plan_from_files(
    input: &PlanningInput,
    labels_path: &Path,
    options: &PlannerOptions,
    max_voxels: u64,
) -> Result<PlanningRun, String> {
    let (ct, labels) = load_ct_and_labels(&input.ct_path, labels_path, max_voxels)?;
    let options = PlannerOptions { lesion_radius_mm: input.lesion_radius_mm, ..options.clone() };
    let result = plan_path(&ct, &labels, input.target_mm, &options);
    Ok(PlanningRun { result, vessel_points: surface_points(&labels, DISPLAY_CELL_MM) })
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
        assert!(err.unwrap_err().contains("lesion_centre_mm"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
