//! The configuration of each node. Units are SI (m, s, Hz) as on the ROS side;
//! every key is documented in `config/<node>.yaml`.

use super::{build_config, ConfigError, InvalidValue, Overrides, Validate};
pub use needle_nav_core::classification::{
    ClassificationMethod, CorrectionRegion, DisplacementFeature, MarkerClassifierConfig, MotionModeConfig, RegionKind,
};
pub use needle_nav_pacs::PacsConfig;
pub use needle_nav_planning::config::{
    PlannerLimits, PlannerMargins, PlannerObstacles, PlannerWeights, TrajectoryPlannerConfig,
};
use serde::{Deserialize, Serialize};
use serde_yaml::Mapping;

fn string_or_integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        S(String),
        I(i64),
    }
    Ok(match Either::deserialize(d)? {
        Either::S(s) => s,
        Either::I(i) => i.to_string(),
    })
}

fn check(ok: bool, key: &'static str, reason: impl FnOnce() -> String) -> Result<(), InvalidValue> {
    if ok {
        Ok(())
    } else {
        Err(InvalidValue::new(key, reason()))
    }
}

fn in_range(key: &'static str, v: f64, lo: f64, hi: f64, unit: &str) -> Result<(), InvalidValue> {
    check(v.is_finite() && v >= lo && v <= hi, key, || format!("{v} is outside [{lo}, {hi}] {unit}"))
}

fn positive(key: &'static str, v: f64, hi: f64, unit: &str) -> Result<(), InvalidValue> {
    check(v.is_finite() && v > 0.0 && v <= hi, key, || format!("{v} must be > 0 and <= {hi} {unit}"))
}

fn sample_checks(c: &needle_nav_core::sample_validation::SampleChecks) -> Result<(), InvalidValue> {
    c.validate().map_err(|(key, reason)| InvalidValue::new(key, reason))
}

fn diagnostics(checked: Result<(), (&'static str, String)>) -> Result<(), InvalidValue> {
    checked.map_err(|(key, reason)| InvalidValue::new(key, reason))
}

fn non_empty(key: &'static str, v: &str) -> Result<(), InvalidValue> {
    check(!v.trim().is_empty(), key, || "must not be empty".into())
}

/// Where the tracker's marker positions come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackerSource {
    /// Digital patient with synthetic breathing and known ground truth.
    Sim,
    /// Digital patient driven by a real recorded breathing trace (ExtMarker CSV).
    Trace,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MarkerTrackerConfig {
    pub source: TrackerSource,
    pub rate_hz: f64,
    pub frame_id: String,
    /// Seed of the digital patient (anatomy, markers, CT-to-tracker pose) and of the tracker errors.
    pub seed: u64,
    pub noise_rms_m: f64,
    pub latency_s: f64,
    pub dropout_probability: f64,
    pub occlusion_rate_per_min: f64,
    pub occlusion_duration_s: f64,
    pub id_swap_rate_per_min: f64,
    pub id_swap_duration_s: f64,
    pub breathing: needle_nav_sim::breathing::BreathingConfig,
    /// ExtMarker folder; empty: the shared data set.
    pub trace_dir: String,
    /// Session id (e.g. 201205101519); empty: the first session. ROS reads an all-digit
    /// value as an integer, so numbers are accepted too.
    #[serde(deserialize_with = "string_or_integer")]
    pub trace_session: String,
    /// Marker of the session whose motion drives the breathing (e.g. LAC); empty: the first.
    pub trace_marker: String,
    pub publish_ground_truth: bool,
    pub publish_visualization: bool,
    /// Thresholds of the node's `/diagnostics` statuses.
    pub diagnostics: needle_nav_core::diagnostics_thresholds::TrackerDiagnostics,
}

impl Default for MarkerTrackerConfig {
    fn default() -> Self {
        // The tracker error model's defaults live with the simulator; only id swaps are off by
        // default here, since a live stack should not start with deliberately swapped markers.
        let sim = needle_nav_sim::tracker_sim::TrackerSimConfig::default();
        MarkerTrackerConfig {
            source: TrackerSource::Sim,
            rate_hz: 250.0,
            frame_id: needle_nav_core::interfaces::frames::TRACKER.into(),
            seed: sim.seed,
            noise_rms_m: sim.noise_rms_m,
            latency_s: sim.latency_s,
            dropout_probability: sim.dropout_probability,
            occlusion_rate_per_min: sim.occlusion_rate_per_min,
            occlusion_duration_s: sim.occlusion_duration_s,
            id_swap_rate_per_min: 0.0,
            id_swap_duration_s: sim.id_swap_duration_s,
            breathing: Default::default(),
            trace_dir: String::new(),
            trace_session: String::new(),
            trace_marker: String::new(),
            publish_ground_truth: true,
            publish_visualization: true,
            diagnostics: Default::default(),
        }
    }
}

impl MarkerTrackerConfig {
    pub fn tracker_sim(&self) -> needle_nav_sim::tracker_sim::TrackerSimConfig {
        needle_nav_sim::tracker_sim::TrackerSimConfig {
            seed: self.seed,
            noise_rms_m: self.noise_rms_m,
            latency_s: self.latency_s,
            dropout_probability: self.dropout_probability,
            occlusion_rate_per_min: self.occlusion_rate_per_min,
            occlusion_duration_s: self.occlusion_duration_s,
            id_swap_rate_per_min: self.id_swap_rate_per_min,
            id_swap_duration_s: self.id_swap_duration_s,
        }
    }
}

impl Validate for MarkerTrackerConfig {
    fn validate(&self) -> Result<(), InvalidValue> {
        in_range("rate_hz", self.rate_hz, 10.0, 1000.0, "Hz")?;
        non_empty("frame_id", &self.frame_id)?;
        in_range("noise_rms_m", self.noise_rms_m, 0.0, 0.01, "m")?;
        in_range("latency_s", self.latency_s, 0.0, 1.0, "s")?;
        in_range("dropout_probability", self.dropout_probability, 0.0, 0.99, "")?;
        in_range("occlusion_rate_per_min", self.occlusion_rate_per_min, 0.0, 60.0, "per minute")?;
        in_range("occlusion_duration_s", self.occlusion_duration_s, 0.0, 60.0, "s")?;
        in_range("id_swap_rate_per_min", self.id_swap_rate_per_min, 0.0, 60.0, "per minute")?;
        in_range("id_swap_duration_s", self.id_swap_duration_s, 0.0, 60.0, "s")?;
        self.breathing.validate().map_err(|e| InvalidValue::new("breathing", e.to_string()))?;
        diagnostics(self.diagnostics.validate())
    }
}

fn range_pair(key: &'static str, v: &[f64]) -> Result<(), InvalidValue> {
    check(v.len() == 2 && v.iter().all(|x| x.is_finite() && *x >= 0.0) && v[0] <= v[1], key, || {
        format!("{v:?} must be [low, high] in metres with 0 <= low <= high")
    })
}

impl Validate for MarkerClassifierConfig {
    fn validate(&self) -> Result<(), InvalidValue> {
        positive("threshold_m", self.threshold_m, 0.1, "m")?;
        in_range("hysteresis_m", self.hysteresis_m, 0.0, self.threshold_m, "m (at most threshold_m)")?;
        check(self.top_n >= 1 && self.top_n <= 64, "top_n", || format!("{} is outside 1..=64", self.top_n))?;
        range_pair("registration_range_m", &self.registration_range_m)?;
        range_pair("correction_range_m", &self.correction_range_m)?;
        check(self.registration_range_m[1] <= self.correction_range_m[0], "correction_range_m", || {
            "must start at or above the end of registration_range_m".into()
        })?;
        if self.method == ClassificationMethod::Learned {
            non_empty("model_path", &self.model_path)?;
        }
        in_range("window_s", self.window_s, 1.0, 120.0, "s")?;
        in_range("min_window_fill", self.min_window_fill, 0.1, 1.0, "")?;
        in_range("motion_modes.similarity_threshold", self.motion_modes.similarity_threshold, 0.0, 1.0, "")
            .map_err(|e| InvalidValue::new("motion_modes.similarity_threshold", e.reason))?;
        let r = &self.motion_modes.tracker_to_patient;
        if !r.is_empty() {
            let m = nalgebra::Matrix3::from_row_slice(if r.len() == 9 { r } else { &[0.0; 9] });
            check(
                r.len() == 9 && (m * m.transpose() - nalgebra::Matrix3::identity()).norm() < 1e-3,
                "motion_modes.tracker_to_patient",
                || "must be 9 numbers forming a rotation matrix (row-major)".into(),
            )?;
        }
        sample_checks(&self.sample_checks)?;
        let region = &self.correction_region;
        match region.kind {
            RegionKind::None => {}
            RegionKind::Box => check(
                region.box_min_m.len() == 3
                    && region.box_max_m.len() == 3
                    && region
                        .box_min_m
                        .iter()
                        .zip(&region.box_max_m)
                        .all(|(a, b)| a.is_finite() && b.is_finite() && a < b),
                "correction_region.box_min_m",
                || "box needs box_min_m and box_max_m as [x, y, z] with min < max".into(),
            )?,
            RegionKind::Polygon => check(
                region.polygon_xy_m.len() >= 6
                    && region.polygon_xy_m.len() % 2 == 0
                    && region.polygon_z_m.len() == 2
                    && region.polygon_z_m[0] < region.polygon_z_m[1],
                "correction_region.polygon_xy_m",
                || "polygon needs >= 3 vertices [x0, y0, x1, y1, ...] and polygon_z_m [z_min, z_max]".into(),
            )?,
        }
        diagnostics(self.diagnostics.validate())
    }
}

/// Where the reference entry point comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntrySource {
    /// The preset entry of the CT case moved by the lesion's offset.
    Preset,
    /// The trajectory planner's plan.
    Plan,
    /// `manual_entry_ct_m`.
    Manual,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LesionRegistrationConfig {
    /// Folder of the planning CT case; empty: no image data yet (registration reports it).
    pub ct_case_dir: String,
    pub image_frame_id: String,
    pub min_markers: u32,
    pub max_outliers: u32,
    pub max_fre_m: f64,
    pub fle_rms_m: f64,
    /// Below this ratio of the markers' 2nd to 1st principal spread the layout is degenerate.
    pub min_spread_ratio: f64,
    /// Inter-marker distances must agree within this for image-tracker correspondence [m].
    pub correspondence_tolerance_m: f64,
    /// Tracker samples used to find the registration markers at the CT's breathing phase [s].
    pub window_s: f64,
    /// Recompute the registration this often [s].
    pub update_period_s: f64,
    /// Radiopaque marker threshold in the CT [HU].
    pub marker_threshold_hu: f64,
    /// The planning CT must contain the lesion: its centre at least lesion radius + this inside every
    /// edge of the scan [m] (else status LESION_NOT_IN_SCAN: re-place markers and rescan).
    pub scan_margin_m: f64,
    /// Median HU around the target below this: air, no lesion there [HU].
    pub target_air_below_hu: f64,
    /// Median HU around the target above this: bone, no lesion there [HU].
    pub target_bone_above_hu: f64,
    pub entry_source: EntrySource,
    pub manual_entry_ct_m: Vec<f64>,
    /// What a tracker sample may contain; a sample outside it is refused on its own.
    pub sample_checks: needle_nav_core::sample_validation::SampleChecks,
    /// Thresholds of the node's `/diagnostics` statuses.
    pub diagnostics: needle_nav_core::diagnostics_thresholds::RegistrationDiagnostics,
}

impl Default for LesionRegistrationConfig {
    fn default() -> Self {
        LesionRegistrationConfig {
            ct_case_dir: String::new(),
            image_frame_id: needle_nav_core::interfaces::frames::CT.into(),
            min_markers: 3,
            max_outliers: 1,
            max_fre_m: 2.0e-3,
            fle_rms_m: 0.35e-3,
            min_spread_ratio: 0.05,
            correspondence_tolerance_m: 3.0e-3,
            window_s: 10.0,
            update_period_s: 2.0,
            marker_threshold_hu: 1500.0,
            scan_margin_m: 0.01,
            target_air_below_hu: -900.0,
            target_bone_above_hu: 200.0,
            entry_source: EntrySource::Preset,
            manual_entry_ct_m: Vec::new(),
            sample_checks: Default::default(),
            diagnostics: Default::default(),
        }
    }
}

impl LesionRegistrationConfig {
    pub fn registration(&self) -> needle_nav_core::registration::RegistrationConfig {
        needle_nav_core::registration::RegistrationConfig {
            min_markers: self.min_markers as usize,
            max_outliers: self.max_outliers as usize,
            max_fre: self.max_fre_m,
            fle_rms: self.fle_rms_m,
            min_spread_ratio: self.min_spread_ratio,
            ..Default::default()
        }
    }

    /// How the planning case is loaded: marker threshold and the scan check (default combination criterion:
    /// the registration does not choose correction markers).
    pub fn load_options(&self) -> needle_nav_core::guidance::LoadOptions {
        needle_nav_core::guidance::LoadOptions {
            detection: needle_nav_core::ct_markers::MarkerDetectionConfig {
                threshold_hu: self.marker_threshold_hu,
                ..Default::default()
            },
            scan: needle_nav_core::guidance::ScanCheckConfig {
                margin_mm: self.scan_margin_m * 1e3,
                air_below_hu: self.target_air_below_hu,
                bone_above_hu: self.target_bone_above_hu,
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

impl Validate for LesionRegistrationConfig {
    fn validate(&self) -> Result<(), InvalidValue> {
        non_empty("image_frame_id", &self.image_frame_id)?;
        check(self.min_markers >= 3, "min_markers", || {
            format!("{} is below 3: a rigid registration needs at least 3 markers", self.min_markers)
        })?;
        check(self.max_outliers <= 10, "max_outliers", || format!("{} is above 10", self.max_outliers))?;
        positive("max_fre_m", self.max_fre_m, 0.05, "m")?;
        positive("fle_rms_m", self.fle_rms_m, 0.01, "m")?;
        in_range("min_spread_ratio", self.min_spread_ratio, 0.0, 1.0, "")?;
        positive("correspondence_tolerance_m", self.correspondence_tolerance_m, 0.05, "m")?;
        in_range("window_s", self.window_s, 1.0, 120.0, "s")?;
        in_range("update_period_s", self.update_period_s, 0.1, 60.0, "s")?;
        in_range("marker_threshold_hu", self.marker_threshold_hu, 500.0, 30000.0, "HU")?;
        in_range("scan_margin_m", self.scan_margin_m, 0.0, 0.1, "m")?;
        in_range("target_air_below_hu", self.target_air_below_hu, -1100.0, -300.0, "HU")?;
        in_range("target_bone_above_hu", self.target_bone_above_hu, 100.0, 3000.0, "HU")?;
        sample_checks(&self.sample_checks)?;
        if self.entry_source == EntrySource::Manual {
            check(
                self.manual_entry_ct_m.len() == 3 && self.manual_entry_ct_m.iter().all(|v| v.is_finite()),
                "manual_entry_ct_m",
                || "entry_source is manual: give three finite coordinates [x, y, z] in m".into(),
            )?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NeedleTargetConfig {
    pub frame_id: String,
    /// Planning CT case (for the 4-D CT correlation model); the same folder as lesion_registration's.
    pub ct_case_dir: String,
    /// Nominal tracker rate; staleness is counted in its periods.
    pub tracker_rate_hz: f64,
    pub stale_after_periods: f64,
    pub deviation_tolerance_m: f64,
    pub robot_latency_s: f64,
    /// none | linear | autoregressive
    pub prediction: needle_nav_core::correction::PredictionMethod,
    /// Calm breathing recorded as the baseline [s].
    pub baseline_s: f64,
    /// Load the baseline from this JSON file if it exists, and save a recorded one to it; empty: record only.
    pub baseline_file: String,
    /// Save the breathing state (baseline, prediction model, the registration they belong to)
    /// here every second, and resume from it after a restart; empty: off.
    pub state_file: String,
    /// A saved state older than this at the first sample after a restart is not used [s].
    pub state_max_age_s: f64,
    /// Without a 4-D CT model, valid targets only while the breathing surrogate is below this.
    pub gate_surrogate: f64,
    /// Search region: correction markers farther than this from the preset entry are not used [m]; 0: all.
    pub search_radius_m: f64,
    /// Sizes of the candidate combinations compared (smallest spread of entry-displacement features wins).
    pub combination_min_markers: u32,
    pub combination_max_markers: u32,
    /// How a combination's agreement is measured: range (max - min of the features, the method's)
    /// or standard_deviation.
    pub combination_criterion: needle_nav_core::ct_markers::CombinationCriterion,
    /// What a tracker sample may contain; a sample outside it is refused on its own.
    pub sample_checks: needle_nav_core::sample_validation::SampleChecks,
    /// Thresholds of the node's `/diagnostics` statuses.
    pub diagnostics: needle_nav_core::diagnostics_thresholds::TargetDiagnostics,
}

impl Default for NeedleTargetConfig {
    fn default() -> Self {
        NeedleTargetConfig {
            frame_id: needle_nav_core::interfaces::frames::TRACKER.into(),
            ct_case_dir: String::new(),
            tracker_rate_hz: 250.0,
            stale_after_periods: 5.0,
            deviation_tolerance_m: 5.0e-3,
            robot_latency_s: 0.15,
            prediction: needle_nav_core::correction::PredictionMethod::Autoregressive,
            baseline_s: 20.0,
            baseline_file: String::new(),
            state_file: String::new(),
            state_max_age_s: 30.0,
            gate_surrogate: 0.15,
            search_radius_m: 0.0,
            combination_min_markers: 2,
            combination_max_markers: 4,
            combination_criterion: Default::default(),
            sample_checks: Default::default(),
            diagnostics: Default::default(),
        }
    }
}

impl NeedleTargetConfig {
    /// How the planning case is loaded: search region, combination sizes and criterion.
    pub fn load_options(&self) -> needle_nav_core::guidance::LoadOptions {
        needle_nav_core::guidance::LoadOptions {
            selection: needle_nav_core::guidance::SelectionConfig {
                search_radius_m: self.search_radius_m,
                min_markers: self.combination_min_markers as usize,
                max_markers: self.combination_max_markers as usize,
            },
            criterion: self.combination_criterion,
            ..Default::default()
        }
    }

    /// Age beyond which a tracker sample is stale [s].
    pub fn stale_after_s(&self) -> f64 {
        self.stale_after_periods / self.tracker_rate_hz
    }
}

impl Validate for NeedleTargetConfig {
    fn validate(&self) -> Result<(), InvalidValue> {
        non_empty("frame_id", &self.frame_id)?;
        positive("tracker_rate_hz", self.tracker_rate_hz, 1000.0, "Hz")?;
        in_range("stale_after_periods", self.stale_after_periods, 1.0, 1000.0, "periods")?;
        positive("deviation_tolerance_m", self.deviation_tolerance_m, 0.1, "m")?;
        in_range("robot_latency_s", self.robot_latency_s, 0.0, 1.0, "s")?;
        in_range("baseline_s", self.baseline_s, 2.0, 600.0, "s")?;
        in_range("state_max_age_s", self.state_max_age_s, 0.0, 3600.0, "s")?;
        check(self.state_file.is_empty() || self.state_file != self.baseline_file, "state_file", || {
            "must not be the baseline_file".into()
        })?;
        in_range("gate_surrogate", self.gate_surrogate, 0.0, 1.0, "")?;
        in_range("search_radius_m", self.search_radius_m, 0.0, 1.0, "m")?;
        sample_checks(&self.sample_checks)?;
        check(
            self.combination_min_markers >= 2
                && self.combination_min_markers <= self.combination_max_markers
                && self.combination_max_markers <= 8,
            "combination_min_markers",
            || "need 2 <= combination_min_markers <= combination_max_markers <= 8".into(),
        )?;
        diagnostics(self.diagnostics.validate())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VesselSegmentationConfig {
    /// ONNX model; empty: the model shipped with the package.
    pub model_path: String,
    /// Refuse inputs larger than this many voxels (memory guard).
    pub max_input_voxels: u64,
    pub threads: u32,
    /// A request arriving while one runs: queue it (true) or refuse it (false).
    pub queue_when_busy: bool,
    pub max_queue: u32,
    /// A request whose output_dir already holds a result (vessel_labels.nii.gz,
    /// vessel_summary.json, vessel_surface.ply) replaces it (true) or is refused, naming the
    /// files (false): the SegmentVessels request has no field to ask for it.
    pub overwrite_results: bool,
    /// DICOM input: leave out slices that cannot be read (with a warning in the response)
    /// instead of refusing the series; a gap they leave is still refused.
    pub skip_unreadable_slices: bool,
    /// Scheduling class of the worker thread and its inference threads (idle: guidance first).
    pub worker_scheduling: needle_nav_segmentation::scheduling::WorkerScheduling,
    /// Thresholds of the node's `/diagnostics` statuses.
    pub diagnostics: needle_nav_core::diagnostics_thresholds::SegmentationDiagnostics,
    /// The PACS requests may name a series in and store the DICOM SEG to; none when its host is empty.
    pub pacs: PacsConfig,
}

impl Default for VesselSegmentationConfig {
    fn default() -> Self {
        VesselSegmentationConfig {
            model_path: String::new(),
            max_input_voxels: 512 * 512 * 1024,
            threads: 2,
            queue_when_busy: true,
            max_queue: 2,
            overwrite_results: false,
            skip_unreadable_slices: false,
            worker_scheduling: needle_nav_segmentation::scheduling::WorkerScheduling::Idle,
            diagnostics: Default::default(),
            pacs: Default::default(),
        }
    }
}

impl Validate for VesselSegmentationConfig {
    fn validate(&self) -> Result<(), InvalidValue> {
        check(self.max_input_voxels >= 32 * 32 * 32, "max_input_voxels", || {
            format!("{} is smaller than one 32^3 patch", self.max_input_voxels)
        })?;
        check((1..=64).contains(&self.threads), "threads", || format!("{} is outside 1..=64", self.threads))?;
        check(self.max_queue <= 16, "max_queue", || format!("{} is above 16", self.max_queue))?;
        diagnostics(self.pacs.validate())?;
        diagnostics(self.diagnostics.validate())
    }
}

impl Validate for TrajectoryPlannerConfig {
    fn validate(&self) -> Result<(), InvalidValue> {
        non_empty("image_frame_id", &self.image_frame_id)?;
        diagnostics(self.pacs.validate())?;
        let (study, series) = (self.ct_study_instance_uid.trim(), self.ct_series_instance_uid.trim());
        if !study.is_empty() || !series.is_empty() {
            for (key, uid) in [("ct_study_instance_uid", study), ("ct_series_instance_uid", series)] {
                needle_nav_pacs::check_uid(uid).map_err(|r| InvalidValue::new(key, r))?;
            }
            check(self.pacs.is_configured(), "pacs.host", || {
                "the planning CT is a PACS series (ct_series_instance_uid) but no PACS is configured".into()
            })?;
            check(
                self.ct_path.trim().is_empty() && self.ct_case_dir.trim().is_empty(),
                "ct_series_instance_uid",
                || "the planning CT is either a PACS series or ct_path / ct_case_dir, not both".into(),
            )?;
        }
        positive("service_timeout_s", self.service_timeout_s, 3600.0, "s")?;
        in_range("safety_margin_m", self.safety_margin_m, 0.0, 0.05, "m")?;
        positive("instrument_length_m", self.instrument_length_m, 0.5, "m")?;
        let m = &self.margins;
        for (key, v) in [
            ("margins.bone_m", m.bone_m),
            ("margins.mediastinum_m", m.mediastinum_m),
            ("margins.lung_vessels_m", m.lung_vessels_m),
            ("margins.airways_m", m.airways_m),
        ] {
            in_range(key, v, 0.0, 0.05, "m")?;
        }
        let l = &self.limits;
        check(l.max_pleural_crossings <= 10, "limits.max_pleural_crossings", || {
            format!("{} is outside 0..=10", l.max_pleural_crossings)
        })?;
        in_range("limits.max_pleural_angle_deg", l.max_pleural_angle_deg, 0.0, 90.0, "deg")?;
        in_range("limits.rib_margin_m", l.rib_margin_m, 0.0, 0.05, "m")?;
        positive("limits.chest_wall_depth_m", l.chest_wall_depth_m, 0.2, "m")?;
        let w = &self.weights;
        for (key, v) in [
            ("weights.clearance", w.clearance),
            ("weights.lung_length_per_cm", w.lung_length_per_cm),
            ("weights.pleural_angle", w.pleural_angle),
            ("weights.length_per_10cm", w.length_per_10cm),
            ("weights.approach_angle", w.approach_angle),
        ] {
            in_range(key, v, 0.0, 100.0, "")?;
        }
        positive("weights.comfortable_clearance_m", w.comfortable_clearance_m, 0.1, "m")?;
        let o = &self.obstacles;
        in_range("obstacles.lung_hu", o.lung_hu, -1000.0, 0.0, "HU")?;
        positive("obstacles.lung_vessel_min_diameter_m", o.lung_vessel_min_diameter_m, 0.05, "m")?;
        check(
            o.lung_vessel_max_diameter_m.is_finite()
                && o.lung_vessel_max_diameter_m >= o.lung_vessel_min_diameter_m
                && o.lung_vessel_max_diameter_m <= 0.05,
            "obstacles.lung_vessel_max_diameter_m",
            || format!("{} must be >= lung_vessel_min_diameter_m and <= 0.05 m", o.lung_vessel_max_diameter_m),
        )?;
        in_range("obstacles.lung_vessel_vesselness", o.lung_vessel_vesselness, 0.0, 1.0, "")?;
        positive("obstacles.airway_min_diameter_m", o.airway_min_diameter_m, 0.05, "m")?;
        let h = &o.contrast_vessel_hu;
        check(h.len() == 2 && h.iter().all(|v| v.is_finite()) && h[0] < h[1], "obstacles.contrast_vessel_hu", || {
            format!("{h:?} must be [low, high] HU with low < high")
        })?;
        positive("obstacles.contrast_vessel_max_growth_m", o.contrast_vessel_max_growth_m, 0.1, "m")?;
        check(self.alternatives <= 20, "alternatives", || format!("{} is outside 0..=20", self.alternatives))?;
        in_range("max_angle_deg", self.max_angle_deg, 0.0, 90.0, "deg")?;
        let d = &self.approach_direction;
        let norm = d.iter().map(|v| v * v).sum::<f64>().sqrt();
        check(d.len() == 3 && norm.is_finite() && (norm - 1.0).abs() < 1e-3, "approach_direction", || {
            format!("{d:?} must be a unit vector [x, y, z]")
        })?;
        let t = &self.target_point_m;
        check(t.len() == 3 && t.iter().all(|v| v.is_finite()), "target_point_m", || {
            format!("{t:?} must be a point [x, y, z] in metres")
        })?;
        let r = &self.entry_region_m;
        check(
            r.len() == 6 && r.iter().all(|v| v.is_finite()) && r[0] < r[1] && r[2] < r[3] && r[4] < r[5],
            "entry_region_m",
            || format!("{r:?} must be [x_min, x_max, y_min, y_max, z_min, z_max] with each min < max"),
        )?;
        in_range("bone_hu", self.bone_hu, 100.0, 3000.0, "HU")?;
        in_range("lesion_radius_m", self.lesion_radius_m, 0.0, 0.05, "m")?;
        check((10..=100_000).contains(&self.directions), "directions", || {
            format!("{} is outside 10..=100000", self.directions)
        })?;
        diagnostics(self.diagnostics.validate())
    }
}

/// Who opens an OpenIGTLink connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IgtlMode {
    /// The bridge connects to the peer's server (PLUS Server; Slicer's connector in server mode).
    Client,
    /// The bridge listens and the peer connects.
    Server,
}

/// One OpenIGTLink connection of the bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IgtlEndpointConfig {
    pub mode: IgtlMode,
    /// Client: the peer's host; server: the address to listen on.
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IgtlBridgeConfig {
    /// The tracker (a PLUS Server by default, port 18944 as PLUS ships it).
    pub tracker: IgtlEndpointConfig,
    /// Whether to talk to 3D Slicer at all.
    pub slicer_enabled: bool,
    pub slicer: IgtlEndpointConfig,
    /// OpenIGTLink device names (PLUS: `<Tool>To<Reference>`), each mapped to the marker id at the
    /// same index of `marker_ids`. Two lists, not a YAML mapping, because ROS parameters are flat.
    pub device_names: Vec<String>,
    pub marker_ids: Vec<u32>,
    pub frame_id: String,
    /// Back-off between connection attempts: starts here, doubles up to `backoff_max_s`.
    pub backoff_initial_s: f64,
    pub backoff_max_s: f64,
    /// Largest message body accepted; a larger one is counted as oversized and skipped.
    pub max_message_bytes: u64,
    /// A device not heard from for this long (tracker time) is published invisible.
    pub device_timeout_s: f64,
    /// A tracker frame is published at the latest this long after its first message arrived
    /// (sooner when every mapped device has reported, or when the next frame starts).
    pub frame_window_s: f64,
    /// The tracker's frame rate, for the output rate in /diagnostics.
    pub expected_rate_hz: f64,
    /// Thresholds of the node's `/diagnostics` statuses (published samples).
    pub diagnostics: needle_nav_core::diagnostics_thresholds::TrackerDiagnostics,
}

impl Default for IgtlBridgeConfig {
    fn default() -> Self {
        IgtlBridgeConfig {
            tracker: IgtlEndpointConfig { mode: IgtlMode::Client, host: "127.0.0.1".into(), port: 18944 },
            slicer_enabled: true,
            slicer: IgtlEndpointConfig { mode: IgtlMode::Server, host: "127.0.0.1".into(), port: 18945 },
            device_names: Vec::new(),
            marker_ids: Vec::new(),
            frame_id: needle_nav_core::interfaces::frames::TRACKER.into(),
            backoff_initial_s: 0.2,
            backoff_max_s: 5.0,
            max_message_bytes: 64 * 1024 * 1024,
            device_timeout_s: 0.2,
            frame_window_s: 0.005,
            expected_rate_hz: 60.0,
            diagnostics: Default::default(),
        }
    }
}

impl Validate for IgtlBridgeConfig {
    fn validate(&self) -> Result<(), InvalidValue> {
        non_empty("tracker.host", &self.tracker.host)?;
        check(self.tracker.port > 0, "tracker.port", || "must be 1..=65535".into())?;
        non_empty("slicer.host", &self.slicer.host)?;
        check(self.slicer.port > 0, "slicer.port", || "must be 1..=65535".into())?;
        check(self.device_names.len() == self.marker_ids.len(), "marker_ids", || {
            format!("{} ids for {} device names: one id per name", self.marker_ids.len(), self.device_names.len())
        })?;
        for (i, n) in self.device_names.iter().enumerate() {
            check(!n.trim().is_empty() && n.len() <= 64, "device_names", || {
                format!("name {i} `{n}` must be 1 to 64 characters (OpenIGTLink device names are at most 20, point names 64)")
            })?;
            check(!self.device_names[..i].contains(n), "device_names", || format!("`{n}` is listed twice"))?;
        }
        for (i, id) in self.marker_ids.iter().enumerate() {
            check(!self.marker_ids[..i].contains(id), "marker_ids", || format!("marker id {id} is listed twice"))?;
        }
        non_empty("frame_id", &self.frame_id)?;
        positive("backoff_initial_s", self.backoff_initial_s, 60.0, "s")?;
        in_range("backoff_max_s", self.backoff_max_s, self.backoff_initial_s, 600.0, "s")?;
        check((1024..=1u64 << 32).contains(&self.max_message_bytes), "max_message_bytes", || {
            format!("{} is outside 1024..=4294967296 bytes", self.max_message_bytes)
        })?;
        positive("device_timeout_s", self.device_timeout_s, 60.0, "s")?;
        in_range("frame_window_s", self.frame_window_s, 0.0, 1.0, "s")?;
        positive("expected_rate_hz", self.expected_rate_hz, 1000.0, "Hz")?;
        diagnostics(self.diagnostics.validate())
    }
}

/// Loads and validates the configuration of the node called `node` (used by the CLI and
/// the launch-file test, which do not know the type statically).
pub fn check_node_config(node: &str, section: Mapping, overrides: &Overrides) -> Result<(), ConfigError> {
    match node {
        "marker_tracker" => build_config::<MarkerTrackerConfig>(node, section, overrides).map(|_| ()),
        "marker_classifier" => build_config::<MarkerClassifierConfig>(node, section, overrides).map(|_| ()),
        "lesion_registration" => build_config::<LesionRegistrationConfig>(node, section, overrides).map(|_| ()),
        "needle_target" => build_config::<NeedleTargetConfig>(node, section, overrides).map(|_| ()),
        "vessel_segmentation" => build_config::<VesselSegmentationConfig>(node, section, overrides).map(|_| ()),
        "trajectory_planner" => build_config::<TrajectoryPlannerConfig>(node, section, overrides).map(|_| ()),
        "igtl_bridge" => build_config::<IgtlBridgeConfig>(node, section, overrides).map(|_| ()),
        other => Err(ConfigError::BadKey { node: other.into(), key: "<node>".into(), reason: "no such node".into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        MarkerTrackerConfig::default().validate().unwrap();
        MarkerClassifierConfig::default().validate().unwrap();
        LesionRegistrationConfig::default().validate().unwrap();
        NeedleTargetConfig::default().validate().unwrap();
        VesselSegmentationConfig::default().validate().unwrap();
        TrajectoryPlannerConfig::default().validate().unwrap();
        IgtlBridgeConfig::default().validate().unwrap();
    }

    #[test]
    fn the_bridge_needs_one_marker_id_per_device_name_and_no_duplicates() {
        let mut c =
            IgtlBridgeConfig { device_names: vec!["A".into(), "B".into()], marker_ids: vec![1], ..Default::default() };
        assert_eq!(c.validate().unwrap_err().key, "marker_ids");
        c.marker_ids = vec![1, 1];
        assert_eq!(c.validate().unwrap_err().key, "marker_ids");
        c.marker_ids = vec![1, 2];
        c.validate().unwrap();
        c.device_names[1] = "A".into();
        assert_eq!(c.validate().unwrap_err().key, "device_names");
        let c = IgtlBridgeConfig { backoff_initial_s: 2.0, backoff_max_s: 1.0, ..Default::default() };
        assert_eq!(c.validate().unwrap_err().key, "backoff_max_s");
    }

    #[test]
    fn a_pacs_series_as_planning_ct_needs_a_pacs_valid_uids_and_no_other_ct() {
        let pacs = PacsConfig { host: "127.0.0.1".into(), port: 4242, ..Default::default() };
        let planner = |study: &str, series: &str, pacs: &PacsConfig, ct_path: &str| TrajectoryPlannerConfig {
            ct_study_instance_uid: study.into(),
            ct_series_instance_uid: series.into(),
            ct_path: ct_path.into(),
            pacs: pacs.clone(),
            ..Default::default()
        };
        planner("1.2.3", "1.2.3.4", &pacs, "").validate().unwrap();
        let key = |c: TrajectoryPlannerConfig| c.validate().unwrap_err().key;
        assert_eq!(key(planner("1.2.3", "", &pacs, "")), "ct_series_instance_uid");
        assert_eq!(key(planner("1.2.03", "1.2.3.4", &pacs, "")), "ct_study_instance_uid");
        assert_eq!(key(planner("1.2.3", "1.2.3.4", &PacsConfig::default(), "")), "pacs.host");
        assert_eq!(key(planner("1.2.3", "1.2.3.4", &pacs, "/data/ct")), "ct_series_instance_uid");
        let bad_pacs = PacsConfig { called_ae_title: "".into(), ..pacs };
        assert_eq!(key(planner("", "", &bad_pacs, "")), "pacs.called_ae_title");
        let seg = VesselSegmentationConfig { pacs: bad_pacs, ..Default::default() };
        assert_eq!(seg.validate().unwrap_err().key, "pacs.called_ae_title");
    }

    #[test]
    fn registration_needs_three_markers_and_a_manual_entry_when_manual() {
        let mut c = LesionRegistrationConfig { min_markers: 2, ..Default::default() };
        assert_eq!(c.validate().unwrap_err().key, "min_markers");
        c.min_markers = 3;
        c.entry_source = EntrySource::Manual;
        assert_eq!(c.validate().unwrap_err().key, "manual_entry_ct_m");
        c.manual_entry_ct_m = vec![0.0, 0.1, f64::NAN];
        assert_eq!(c.validate().unwrap_err().key, "manual_entry_ct_m");
        c.manual_entry_ct_m = vec![0.0, 0.1, 0.2];
        c.validate().unwrap();
    }

    #[test]
    fn a_numeric_session_id_is_read_as_text() {
        let section = crate::config::node_section(
            "marker_tracker:\n  ros__parameters:\n    trace_session: 201205101522\n",
            "marker_tracker",
        )
        .unwrap();
        let c: MarkerTrackerConfig = build_config("marker_tracker", section, &Vec::new()).unwrap();
        assert_eq!(c.trace_session, "201205101522");
    }

    #[test]
    fn worker_scheduling_is_one_of_the_named_classes() {
        let parse = |yaml: &str| {
            let text = format!("vessel_segmentation:\n  ros__parameters:\n    worker_scheduling: {yaml}\n");
            let section = crate::config::node_section(&text, "vessel_segmentation").unwrap();
            build_config::<VesselSegmentationConfig>("vessel_segmentation", section, &Vec::new())
        };
        use needle_nav_segmentation::scheduling::WorkerScheduling;
        assert_eq!(parse("batch").unwrap().worker_scheduling, WorkerScheduling::Batch);
        assert_eq!(parse("normal").unwrap().worker_scheduling, WorkerScheduling::Normal);
        assert_eq!(VesselSegmentationConfig::default().worker_scheduling, WorkerScheduling::Idle);
        // A real-time class is not offered for a batch job: refused, naming the key and the choices.
        let e = parse("fifo").unwrap_err().to_string();
        assert!(e.contains("worker_scheduling") && e.contains("idle"), "{e}");
    }

    #[test]
    fn combination_criterion_and_scan_check_parameters() {
        use needle_nav_core::ct_markers::CombinationCriterion;
        let parse = |node: &str, yaml: &str| {
            let text = format!("{node}:\n  ros__parameters:\n    {yaml}\n");
            crate::config::node_section(&text, node).unwrap()
        };
        let target =
            |yaml: &str| build_config::<NeedleTargetConfig>("needle_target", parse("needle_target", yaml), &Vec::new());
        assert_eq!(NeedleTargetConfig::default().combination_criterion, CombinationCriterion::Range);
        let c = target("combination_criterion: standard_deviation").unwrap();
        assert_eq!(c.load_options().criterion, CombinationCriterion::StandardDeviation);
        let e = target("combination_criterion: variance").unwrap_err().to_string();
        assert!(e.contains("combination_criterion") && e.contains("range"), "{e}");
        let reg = LesionRegistrationConfig::default();
        assert_eq!(reg.load_options().scan, needle_nav_core::guidance::ScanCheckConfig::default());
        let bad = LesionRegistrationConfig { scan_margin_m: 0.5, ..Default::default() };
        assert_eq!(bad.validate().unwrap_err().key, "scan_margin_m");
        let bad = LesionRegistrationConfig { target_bone_above_hu: 50.0, ..Default::default() };
        assert_eq!(bad.validate().unwrap_err().key, "target_bone_above_hu");
    }

    #[test]
    fn correction_region_kind_keeps_its_names() {
        let parse = |yaml: &str| {
            let text = format!("marker_classifier:\n  ros__parameters:\n    correction_region:\n      {yaml}\n");
            let section = crate::config::node_section(&text, "marker_classifier").unwrap();
            build_config::<MarkerClassifierConfig>("marker_classifier", section, &Vec::new())
        };
        assert_eq!(parse("kind: none").unwrap().correction_region.kind, RegionKind::None);
        let c = parse("kind: box\n      box_min_m: [0, 0, 0]\n      box_max_m: [1, 1, 1]").unwrap();
        assert_eq!(c.correction_region.kind, RegionKind::Box);
        let e = parse("kind: circle").unwrap_err().to_string();
        assert!(e.contains("correction_region") && e.contains("polygon"), "{e}");
        let e = parse("kind: polygon").unwrap_err().to_string();
        assert!(e.contains("polygon_xy_m"), "{e}");
        assert_eq!(serde_json::to_string(&RegionKind::Polygon).unwrap(), "\"polygon\"");
    }

    #[test]
    fn hysteresis_cannot_exceed_threshold() {
        let c = MarkerClassifierConfig { threshold_m: 1e-3, hysteresis_m: 2e-3, ..Default::default() };
        assert_eq!(c.validate().unwrap_err().key, "hysteresis_m");
    }

    #[test]
    fn stale_limit_is_periods_over_rate() {
        let c = NeedleTargetConfig { tracker_rate_hz: 200.0, stale_after_periods: 4.0, ..Default::default() };
        approx::assert_relative_eq!(c.stale_after_s(), 0.02);
    }

    #[test]
    fn approach_direction_must_be_unit() {
        let c = TrajectoryPlannerConfig { approach_direction: vec![0.0, 2.0, 0.0], ..Default::default() };
        assert_eq!(c.validate().unwrap_err().key, "approach_direction");
    }
}
