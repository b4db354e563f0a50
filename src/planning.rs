//! The planner's work between the segmentation service and the plan message, without ROS:
//! where the CT and target come from (a case folder or explicit parameters), loading the CT and
//! the vessel labels the service wrote, and the path search of `core::planning`.

use crate::config::TrajectoryPlannerConfig;
use crate::core::planning::{plan_path, PlanError, PlannedPath, PlannerOptions};
use crate::core::segmentation_request;
use crate::imaging::nifti;
use crate::imaging::volume::Volume;
use crate::segmentation::pipeline::load_input;
use nalgebra::{Point3, Vector3};
use std::path::{Path, PathBuf};

/// What to plan on.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanningInput {
    pub ct_path: PathBuf,
    /// CT frame (LPS) [mm].
    pub target_mm: Point3<f64>,
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
        return Ok(Some(PlanningInput {
            ct_path: dir.join(ct_dir),
            target_mm: Point3::new(lesion[0], lesion[1], lesion[2]),
        }));
    }
    if cfg.ct_path.trim().is_empty() {
        return Ok(None);
    }
    let t = &cfg.target_point_m;
    Ok(Some(PlanningInput {
        ct_path: PathBuf::from(&cfg.ct_path),
        target_mm: Point3::new(t[0] * 1000.0, t[1] * 1000.0, t[2] * 1000.0),
    }))
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

#[derive(Debug, thiserror::Error)]
pub enum PlanningFailure {
    #[error("cannot load the planning CT: {0}")]
    Input(String),
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// Loads the CT and the labels (which must share its grid) and plans.
pub fn plan_from_files(
    input: &PlanningInput,
    labels_path: &Path,
    options: &PlannerOptions,
    max_voxels: u64,
) -> Result<PlannedPath, PlanningFailure> {
    let request = segmentation_request::input_kind(&input.ct_path.display().to_string())
        .map_err(|e| PlanningFailure::Input(e.to_string()))?;
    let (ct, _, _) = load_input(&request, max_voxels).map_err(|e| PlanningFailure::Input(e.to_string()))?;
    let labels = nifti::read(labels_path).map_err(|e| PlanningFailure::Input(e.to_string()))?;
    if labels.geometry.dims != ct.geometry.dims {
        return Err(PlanningFailure::Input(format!(
            "the labels {} ({:?}) are not on the CT's grid ({:?})",
            labels_path.display(),
            labels.geometry.dims,
            ct.geometry.dims
        )));
    }
    let labels = Volume { geometry: ct.geometry.clone(), data: labels.data.iter().map(|v| *v as u8).collect() };
    Ok(plan_path(&ct, &labels, input.target_mm, options)?)
}
