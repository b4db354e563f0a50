//! The planner's configuration as the `trajectory_planner` node and `needle_nav plan` read it
//! (ROS 2 parameter-file format, SI units); `plan_files::planner_options` turns it into the
//! search's options. Validation lives with the other node configurations (`needle_nav_nodes`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrajectoryPlannerConfig {
    /// A digital-patient / planning case folder (case.json): its CT series and its lesion centre
    /// as the target. Takes precedence over ct_path and target_point_m.
    pub ct_case_dir: String,
    /// Planning CT (DICOM folder or NIfTI); empty (and no ct_case_dir): no plan is made.
    pub ct_path: String,
    /// Planning CT from the PACS (`pacs`): its StudyInstanceUID and SeriesInstanceUID, instead
    /// of ct_path; the node retrieves the series into output_dir/pacs_input/ and plans on it.
    pub ct_study_instance_uid: String,
    pub ct_series_instance_uid: String,
    /// Target in the CT frame (LPS) [m], used with ct_path.
    pub target_point_m: Vec<f64>,
    /// Lesion radius around the target [m] (with ct_path; a case folder gives its own): vessel
    /// labels inside it are lesion, not obstacles. 0: the target is a point.
    pub lesion_radius_m: f64,
    /// Vessel labels inside the lesion radius are taken as lesion (an enhancing lesion mislabelled),
    /// not as obstacles. false: every label is an obstacle, and a target inside one is refused.
    pub ignore_vessel_labels_in_lesion: bool,
    pub output_dir: String,
    pub image_frame_id: String,
    pub service_timeout_s: f64,
    /// Clearance from vessels (the network's and contrast-enhanced ones) [m].
    pub safety_margin_m: f64,
    /// Usable needle length [m]: a longer skin-to-target path is refused.
    pub instrument_length_m: f64,
    pub max_angle_deg: f64,
    /// Preferred approach direction in CT coordinates (unit vector, LPS), from the target towards the skin.
    pub approach_direction: Vec<f64>,
    /// Entry points must lie in this box [x_min, x_max, y_min, y_max, z_min, z_max], CT frame [m].
    pub entry_region_m: Vec<f64>,
    /// HU at or above which a voxel counts as bone (an obstacle, like the vessels).
    pub bone_hu: f64,
    /// Straight paths tried inside the cone around approach_direction.
    pub directions: u32,
    /// Other passing paths reported with the chosen one.
    pub alternatives: u32,
    pub margins: PlannerMargins,
    pub limits: PlannerLimits,
    pub weights: PlannerWeights,
    pub obstacles: PlannerObstacles,
    /// Thresholds of the node's `/diagnostics` statuses.
    pub diagnostics: needle_nav_core::diagnostics_thresholds::PlannerDiagnostics,
    /// The PACS the planning CT is retrieved from (with ct_series_instance_uid).
    pub pacs: needle_nav_pacs::PacsConfig,
}

/// Clearances from the CT-derived layers [m] (vessels: safety_margin_m).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlannerMargins {
    pub bone_m: f64,
    pub mediastinum_m: f64,
    pub lung_vessels_m: f64,
    pub airways_m: f64,
}

impl Default for PlannerMargins {
    fn default() -> Self {
        let d = crate::LayerMargins::default();
        PlannerMargins {
            bone_m: d.bone_mm / 1000.0,
            mediastinum_m: d.mediastinum_mm / 1000.0,
            lung_vessels_m: d.lung_vessels_mm / 1000.0,
            airways_m: d.airways_mm / 1000.0,
        }
    }
}

/// Hard limits besides the clearances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlannerLimits {
    pub max_pleural_crossings: u32,
    pub refuse_fissure_crossings: bool,
    pub max_pleural_angle_deg: f64,
    pub rib_margin_m: f64,
    pub chest_wall_depth_m: f64,
}

impl Default for PlannerLimits {
    fn default() -> Self {
        let d = crate::HardLimits::default();
        PlannerLimits {
            max_pleural_crossings: d.max_pleural_crossings,
            refuse_fissure_crossings: d.refuse_fissure_crossings,
            max_pleural_angle_deg: d.max_pleural_angle_deg,
            rib_margin_m: d.rib_margin_mm / 1000.0,
            chest_wall_depth_m: d.chest_wall_depth_mm / 1000.0,
        }
    }
}

/// Weights of the cost among the paths that pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlannerWeights {
    pub clearance: f64,
    pub comfortable_clearance_m: f64,
    pub lung_length_per_cm: f64,
    pub pleural_angle: f64,
    pub length_per_10cm: f64,
    pub approach_angle: f64,
}

impl Default for PlannerWeights {
    fn default() -> Self {
        let d = crate::CostWeights::default();
        PlannerWeights {
            clearance: d.clearance,
            comfortable_clearance_m: d.comfortable_clearance_mm / 1000.0,
            lung_length_per_cm: d.lung_length_per_10mm,
            pleural_angle: d.pleural_angle_per_90deg,
            length_per_10cm: d.length_per_100mm,
            approach_angle: d.approach_angle_per_90deg,
        }
    }
}

/// How the obstacle layers are found in the CT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlannerObstacles {
    pub lung_hu: f64,
    pub lung_vessel_min_diameter_m: f64,
    pub lung_vessel_max_diameter_m: f64,
    pub lung_vessel_vesselness: f64,
    pub airway_min_diameter_m: f64,
    pub contrast_vessel_hu: Vec<f64>,
    pub contrast_vessel_max_growth_m: f64,
    pub detect_fissures: bool,
}

impl Default for PlannerObstacles {
    fn default() -> Self {
        let d = crate::ObstacleOptions::default();
        PlannerObstacles {
            lung_hu: d.lung_hu as f64,
            lung_vessel_min_diameter_m: d.lung_vessel_min_diameter_mm / 1000.0,
            lung_vessel_max_diameter_m: d.lung_vessel_max_diameter_mm / 1000.0,
            lung_vessel_vesselness: d.lung_vessel_vesselness,
            airway_min_diameter_m: d.airway_min_diameter_mm / 1000.0,
            contrast_vessel_hu: d.contrast_vessel_hu.iter().map(|v| *v as f64).collect(),
            contrast_vessel_max_growth_m: d.contrast_vessel_max_growth_mm / 1000.0,
            detect_fissures: d.detect_fissures,
        }
    }
}

impl Default for TrajectoryPlannerConfig {
    fn default() -> Self {
        TrajectoryPlannerConfig {
            ct_case_dir: String::new(),
            ct_path: String::new(),
            ct_study_instance_uid: String::new(),
            ct_series_instance_uid: String::new(),
            target_point_m: vec![0.0, 0.0, 0.0],
            lesion_radius_m: 0.0,
            ignore_vessel_labels_in_lesion: true,
            output_dir: "/tmp/needle_nav_plan".into(),
            image_frame_id: needle_nav_core::interfaces::frames::CT.into(),
            service_timeout_s: 300.0,
            safety_margin_m: 5.0e-3,
            instrument_length_m: 0.15,
            max_angle_deg: 45.0,
            approach_direction: vec![0.0, -1.0, 0.0],
            entry_region_m: vec![-10.0, 10.0, -10.0, 10.0, -10.0, 10.0],
            bone_hu: 300.0,
            directions: 3000,
            alternatives: 4,
            margins: Default::default(),
            limits: Default::default(),
            weights: Default::default(),
            obstacles: Default::default(),
            diagnostics: Default::default(),
            pacs: Default::default(),
        }
    }
}
