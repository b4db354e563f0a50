//! The breathing-compensated guidance pipeline, shared by the nodes and the evaluation:
//! the planning case (CT markers, lesion, entry, 4-D phases), registration at the CT's
//! breathing phase with automatic marker correspondence, and the corrected, gated target.
//! Positions are metres; CT positions are in the CT patient frame (LPS), tracked ones in the tracker frame.

use super::case_file::CaseFileError;
use super::correction::{Baseline, CorrectionError, CorrelationModel, PredictionMethod, Predictor, PredictorState};
use super::correspondence::{match_markers, CorrespondenceError};
use super::ct_markers::{CombinationCriterion, CtMarkerError, DetectedMarker, MarkerDetectionConfig, Rejection};
use super::registration::{register, RegistrationConfig, RegistrationError, RegistrationResult};
use super::target_gate::InvalidReason;
use super::tracking::TrackerSample;
use crate::volume::Volume;
use nalgebra::{Isometry3, Point3, Vector3};
use serde::{Deserialize, Serialize};

/// What a rescan must fix: told to the user with every scan-check refusal.
const RESCAN: &str = "re-place the markers around the planned entry point and scan again so that the scan covers \
                      the lesion and every marker";

#[derive(Debug, thiserror::Error)]
pub enum GuidanceError {
    #[error("planning case {path}: {reason}")]
    Case { path: String, reason: String },
    #[error("planning case {path}: {source}")]
    CaseFile { path: String, source: CaseFileError },
    /// The planning CT could not be read (the imaging crate's DICOM error, as text).
    #[error("planning CT {path}: {reason}")]
    CtImage { path: String, reason: String },
    #[error("markers in the planning CT: {0}")]
    CtMarkers(#[from] CtMarkerError),
    /// The lesion (centre plus radius plus the margin) is not inside the scanned volume.
    #[error(
        "the lesion is not inside the scan: its centre {centre_mm:?} mm (radius {radius_mm:.1} mm) is \
         {distance_mm:.1} mm from the scan's {side} edge, at least {need_mm:.1} mm (radius + {margin_mm:.0} mm \
         margin) needed: {RESCAN}",
        centre_mm = .centre_mm.map(|v| (v * 10.0).round() / 10.0)
    )]
    LesionOutsideScan {
        centre_mm: [f64; 3],
        radius_mm: f64,
        /// Signed distance of the centre to the nearest edge along an image axis (negative: outside) [mm].
        distance_mm: f64,
        need_mm: f64,
        margin_mm: f64,
        side: &'static str,
    },
    /// The target lies in air or bone: no lesion can be there (a wrong target, or the scan misses it).
    #[error(
        "the target is not in tissue that can hold a lesion: median {median_hu:.0} HU within {probe_mm:.1} mm of \
         {centre_mm:?} mm is {tissue} ({rule}): check the target; if it is right, the scan does not show the \
         lesion: {RESCAN}",
        centre_mm = .centre_mm.map(|v| (v * 10.0).round() / 10.0),
        rule = match .tissue { TargetTissue::Air => "below the air limit", TargetTissue::Bone => "above the bone limit" }
    )]
    LesionNotInTissue { centre_mm: [f64; 3], median_hu: f64, probe_mm: f64, tissue: TargetTissue },
    /// A registration marker is (partly) outside the field of view.
    #[error("marker outside the scan: {detail}: {RESCAN}")]
    MarkerOutsideScan { detail: String },
    #[error(
        "only {found} markers found in the planning CT, at least {need} needed: re-place the markers and scan again"
    )]
    TooFewCtMarkers { found: usize, need: usize },
    #[error("marker correspondence: {0}")]
    Correspondence(#[from] CorrespondenceError),
    #[error("registration: {0}")]
    Registration(#[from] RegistrationError),
    #[error("not enough tracked registration markers at the CT's breathing phase: {have} (need {need})")]
    NotEnoughTracked { have: usize, need: usize },
}

/// Why a target is refused by its HU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetTissue {
    Air,
    Bone,
}

impl std::fmt::Display for TargetTissue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TargetTissue::Air => "air (outside the body or in an airway)",
            TargetTissue::Bone => "bone (or contrast-filled vessel)",
        })
    }
}

/// The scan must contain the lesion (the method's alarm: re-place markers and rescan).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScanCheckConfig {
    /// The lesion (centre + radius) must lie at least this far inside every edge of the scan [mm].
    /// 10 mm: the planner needs tissue around the lesion to judge a path's last centimetre (its
    /// vessel margin is 5 mm), and a lesion cut by the edge of the scan may be larger than it looks.
    pub margin_mm: f64,
    /// Radius of the ball around the target whose median HU is judged [mm] (at most the lesion radius
    /// when that is smaller, at least one voxel).
    pub probe_radius_mm: f64,
    /// Median HU below this: air. Air reads -1000, aerated lung -700 to -900, a ground-glass nodule
    /// about -600 and up; -900 refuses air and keeps every lung target.
    pub air_below_hu: f64,
    /// Median HU above this: bone. Cancellous bone 200-400 and cortical 500+ HU; solid lesions
    /// read -100 to +100 HU, enhancing ones up to about 150 HU.
    pub bone_above_hu: f64,
}

impl Default for ScanCheckConfig {
    fn default() -> Self {
        ScanCheckConfig { margin_mm: 10.0, probe_radius_mm: 3.0, air_below_hu: -900.0, bone_above_hu: 200.0 }
    }
}

/// What the scan check measured (for logs and the evaluation).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScanCheck {
    /// Smallest signed distance of the lesion centre to an edge of the scan [mm].
    pub edge_distance_mm: f64,
    pub median_hu: f64,
    pub probe_voxels: usize,
}

/// Signed distances [mm] of a point to the scan's lower and upper edge per image axis (voxel
/// centres of the first and last voxel), with the edges' names.
fn edge_distances(volume: &Volume<f32>, p: &Point3<f64>) -> [(f64, &'static str); 6] {
    let g = &volume.geometry;
    let ijk = g.patient_to_index(p);
    let names = [("first column", "last column"), ("first row", "last row"), ("first slice", "last slice")];
    let mut out = [(0.0, ""); 6];
    for a in 0..3 {
        out[2 * a] = (ijk[a] * g.spacing_mm[a], names[a].0);
        out[2 * a + 1] = ((g.dims[a] as f64 - 1.0 - ijk[a]) * g.spacing_mm[a], names[a].1);
    }
    out
}

fn nearest_edge(volume: &Volume<f32>, p: &Point3<f64>) -> (f64, &'static str) {
    edge_distances(volume, p).into_iter().min_by(|a, b| a.0.total_cmp(&b.0)).unwrap_or((f64::NEG_INFINITY, ""))
}

/// Checks that the planning CT contains the lesion and the markers (the method's alarm):
/// the lesion centre at least radius + margin inside every edge, the median HU in a small ball at the
/// target neither air nor bone, every expected marker (`expected_markers`: centre [mm], radius [mm],
/// e.g. from case.json) at least its radius inside the edges, and no marker-bright blob cut by the edge.
pub fn check_scan_contains(
    volume: &Volume<f32>,
    lesion_mm: [f64; 3],
    lesion_radius_mm: f64,
    expected_markers: &[(u32, [f64; 3], f64)],
    rejected: &[(DetectedMarker, Rejection)],
    cfg: &ScanCheckConfig,
) -> Result<ScanCheck, GuidanceError> {
    let centre = Point3::from(lesion_mm);
    let (distance_mm, side) = nearest_edge(volume, &centre);
    let need_mm = lesion_radius_mm.max(0.0) + cfg.margin_mm;
    if distance_mm.is_nan() || distance_mm < need_mm {
        return Err(GuidanceError::LesionOutsideScan {
            centre_mm: lesion_mm,
            radius_mm: lesion_radius_mm,
            distance_mm,
            need_mm,
            margin_mm: cfg.margin_mm,
            side,
        });
    }
    let g = &volume.geometry;
    let coarsest = g.spacing_mm.iter().copied().fold(0.0, f64::max);
    let mut probe = cfg.probe_radius_mm;
    if lesion_radius_mm > 0.0 {
        probe = probe.min(lesion_radius_mm);
    }
    let probe = probe.max(0.5 * coarsest);
    let mut values = Vec::new();
    if let Some([(i0, i1), (j0, j1), (k0, k1)]) = g.index_box(&centre, probe) {
        for k in k0..k1 {
            for j in j0..j1 {
                for i in i0..i1 {
                    let p = g.index_to_patient([i as f64, j as f64, k as f64]);
                    let v = volume.data[g.offset(i, j, k)];
                    if (p - centre).norm() <= probe && !v.is_nan() {
                        values.push(v as f64);
                    }
                }
            }
        }
    }
    if values.is_empty() {
        // The ball holds no voxel centre (coarse voxels): the nearest voxel.
        let ijk = g.patient_to_index(&centre);
        let idx = [0, 1, 2].map(|a| (ijk[a].round().max(0.0) as usize).min(g.dims[a] - 1));
        values.push(volume.data[g.offset(idx[0], idx[1], idx[2])] as f64);
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median_hu = if n % 2 == 1 { values[n / 2] } else { 0.5 * (values[n / 2 - 1] + values[n / 2]) };
    let tissue = if median_hu < cfg.air_below_hu {
        Some(TargetTissue::Air)
    } else if median_hu > cfg.bone_above_hu {
        Some(TargetTissue::Bone)
    } else {
        None
    };
    if let Some(tissue) = tissue {
        return Err(GuidanceError::LesionNotInTissue { centre_mm: lesion_mm, median_hu, probe_mm: probe, tissue });
    }
    for (id, c, r) in expected_markers {
        let (d, side) = nearest_edge(volume, &Point3::from(*c));
        if d.is_nan() || d < *r {
            return Err(GuidanceError::MarkerOutsideScan {
                detail: format!(
                    "marker {id} at {:?} mm (radius {r:.1} mm) is {d:.1} mm from the scan's {side} edge",
                    c.map(|v| (v * 10.0).round() / 10.0)
                ),
            });
        }
    }
    if let Some((m, _)) = rejected.iter().find(|(m, why)| *why == Rejection::TouchesEdge && m.voxels >= 2) {
        return Err(GuidanceError::MarkerOutsideScan {
            detail: format!(
                "a marker-bright blob ({} voxels, peak {:.0} HU) at {:?} mm is cut by the edge of the scan",
                m.voxels,
                m.peak_hu,
                m.centre_mm.map(|v| (v * 10.0).round() / 10.0)
            ),
        });
    }
    Ok(ScanCheck { edge_distance_mm: distance_mm, median_hu, probe_voxels: n })
}

/// Everything `PlanningCase::load_with` needs besides the folder.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadOptions {
    pub detection: MarkerDetectionConfig,
    pub selection: SelectionConfig,
    /// How the correction-marker combination is chosen (default: smallest range).
    pub criterion: CombinationCriterion,
    pub scan: ScanCheckConfig,
}

/// One 4-D CT frame: marker positions (same order as `PlanningCase::image_markers_m`) and the lesion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CtPhase {
    pub time_s: f64,
    pub markers_m: Vec<Point3<f64>>,
    pub lesion_m: Point3<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanningCase {
    /// Marker centres detected in the planning CT (end-exhale) [m, CT frame].
    pub image_markers_m: Vec<Point3<f64>>,
    pub lesion_m: Point3<f64>,
    pub entry_m: Point3<f64>,
    pub phases: Vec<CtPhase>,
    /// Correction markers chosen from the 4-D CT (indices into image_markers_m): within the search
    /// region around the entry, the combination whose entry-displacement features agree best.
    /// None: no 4-D CT or no search region configured; every correction marker is used.
    #[serde(default)]
    pub selected_correction: Option<Vec<usize>>,
    #[serde(default)]
    pub selection_note: String,
}

/// Search region and candidate combinations (see `ct_markers::select_combination`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectionConfig {
    /// Markers farther than this from the preset entry are not candidates [m]; 0: no selection.
    pub search_radius_m: f64,
    pub min_markers: usize,
    pub max_markers: usize,
}

impl Default for SelectionConfig {
    fn default() -> Self {
        SelectionConfig { search_radius_m: 0.0, min_markers: 2, max_markers: 4 }
    }
}

impl PlanningCase {
    /// A plan without image data (no CT markers, no 4-D phases): only the registered lesion and
    /// entry, mapped back into CT coordinates. Targets from it are gated to end-exhale.
    pub fn without_images(plan: &RegisteredPlan) -> PlanningCase {
        let back = plan.transform.inverse();
        PlanningCase {
            image_markers_m: Vec::new(),
            lesion_m: back * plan.lesion_tracker,
            entry_m: back * plan.entry_tracker,
            phases: Vec::new(),
            selected_correction: None,
            selection_note: String::new(),
        }
    }
}

/// Registration markers' positions at the CT's breathing phase (end-exhale): averaged over the
/// window's samples where the correction markers' breathing surrogate is in its lowest 15 %.
/// Falls back to the plain average when there are no correction markers to tell the phase.
pub fn positions_at_ct_phase(
    window: &[TrackerSample],
    registration_ids: &[u32],
    correction_ids: &[u32],
) -> Vec<(u32, Point3<f64>)> {
    let complete: Vec<&TrackerSample> =
        window.iter().filter(|s| correction_ids.iter().all(|id| s.usable().any(|m| m.id == *id))).collect();
    let sets: Vec<Vec<Point3<f64>>> = complete
        .iter()
        .map(|s| correction_ids.iter().filter_map(|id| s.usable().find(|m| m.id == *id).map(|m| m.position)).collect())
        .collect();
    let selected: Vec<&TrackerSample> = match Baseline::record(correction_ids.to_vec(), &sets) {
        Ok(b) => {
            let mut s: Vec<(f64, &TrackerSample)> =
                complete.iter().zip(&sets).map(|(smp, set)| (b.surrogate(set), *smp)).collect();
            s.sort_by(|a, b| a.0.total_cmp(&b.0));
            let keep = (s.len() as f64 * 0.15).ceil() as usize;
            s.into_iter().take(keep.max(1)).map(|(_, smp)| smp).collect()
        }
        Err(_) => window.iter().collect(),
    };
    registration_ids
        .iter()
        .filter_map(|id| {
            let pts: Vec<Point3<f64>> =
                selected.iter().filter_map(|s| s.usable().find(|m| m.id == *id).map(|m| m.position)).collect();
            (!pts.is_empty())
                .then(|| (*id, Point3::from(pts.iter().fold(Vector3::zeros(), |a, p| a + p.coords) / pts.len() as f64)))
        })
        .collect()
}

/// A registration of the planning case to the patient.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseRegistration {
    pub transform: Isometry3<f64>,
    pub result: RegistrationResult,
    /// (index into image_markers_m, tracker id) of the markers used.
    pub used: Vec<(usize, u32)>,
    pub excluded: Vec<(usize, u32)>,
    pub lesion_tracker: Point3<f64>,
    pub entry_tracker: Point3<f64>,
    pub tre_lesion_m: f64,
    pub tre_entry_m: f64,
}

impl CaseRegistration {
    /// An entry point given in CT coordinates (preset, plan or manual), in the tracker frame,
    /// with its predicted TRE from the markers actually used.
    pub fn entry_in_tracker(&self, case: &PlanningCase, entry_ct: &Point3<f64>, fle_rms: f64) -> (Point3<f64>, f64) {
        let used: Vec<Point3<f64>> = self.used.iter().map(|u| case.image_markers_m[u.0]).collect();
        (self.transform * entry_ct, super::registration::predicted_tre(&used, entry_ct, fle_rms))
    }
}

/// Matches the tracked registration markers to the CT markers by their distance pattern and
/// registers them (with leave-one-out outlier exclusion).
pub fn register_case(
    case: &PlanningCase,
    tracked: &[(u32, Point3<f64>)],
    config: &RegistrationConfig,
    correspondence_tolerance_m: f64,
) -> Result<CaseRegistration, GuidanceError> {
    if tracked.len() < config.min_markers {
        return Err(GuidanceError::NotEnoughTracked { have: tracked.len(), need: config.min_markers });
    }
    let tracked_pts: Vec<Point3<f64>> = tracked.iter().map(|(_, p)| *p).collect();
    let matched = match_markers(&case.image_markers_m, &tracked_pts, correspondence_tolerance_m, config.min_markers)?;
    let image: Vec<Point3<f64>> = matched.pairs.iter().map(|(i, _)| case.image_markers_m[*i]).collect();
    let fixed: Vec<Point3<f64>> = matched.pairs.iter().map(|(_, t)| tracked_pts[*t]).collect();
    let result = register(&image, &fixed, None, config)?;
    let pair = |k: usize| (matched.pairs[k].0, tracked[matched.pairs[k].1].0);
    let used_image: Vec<Point3<f64>> = result.used.iter().map(|&k| image[k]).collect();
    let tre = |p: &Point3<f64>| super::registration::predicted_tre(&used_image, p, config.fle_rms);
    Ok(CaseRegistration {
        transform: result.transform,
        used: result.used.iter().map(|&k| pair(k)).collect(),
        excluded: result.excluded.iter().map(|&k| pair(k)).collect(),
        lesion_tracker: result.transform * case.lesion_m,
        entry_tracker: result.transform * case.entry_m,
        tre_lesion_m: tre(&case.lesion_m),
        tre_entry_m: tre(&case.entry_m),
        result,
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetConfig {
    /// Calm breathing recorded for the baseline [s].
    pub baseline_s: f64,
    pub deviation_tolerance_m: f64,
    pub latency_s: f64,
    pub prediction: PredictionMethod,
    /// Without a correlation model (no 4-D CT), targets are valid only near the CT's phase:
    /// breathing surrogate at most this (0 end-exhale, 1 a normal breath).
    pub gate_surrogate: f64,
}

impl Default for TargetConfig {
    fn default() -> Self {
        TargetConfig {
            baseline_s: 20.0,
            deviation_tolerance_m: 5e-3,
            latency_s: 0.15,
            prediction: PredictionMethod::Autoregressive,
            gate_surrogate: 0.15,
        }
    }
}

/// What the target computation needs of a registration (what `LesionRegistration` carries).
#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredPlan {
    pub transform: Isometry3<f64>,
    pub lesion_tracker: Point3<f64>,
    pub entry_tracker: Point3<f64>,
    pub tre_lesion_m: f64,
}

impl From<&CaseRegistration> for RegisteredPlan {
    fn from(r: &CaseRegistration) -> Self {
        RegisteredPlan {
            transform: r.transform,
            lesion_tracker: r.lesion_tracker,
            entry_tracker: r.entry_tracker,
            tre_lesion_m: r.tre_lesion_m,
        }
    }
}

/// A corrected target.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub entry: Point3<f64>,
    pub target: Point3<f64>,
    pub direction: Vector3<f64>,
    pub depth_m: f64,
    pub predicted_error_m: f64,
    pub deviation_m: f64,
    pub surrogate: f64,
    /// The target is for this long after its sample: the latency, or 0 without prediction [s].
    pub horizon_s: f64,
}

/// The breathing state of a [`TargetComputer`] saved to disk, so that a restarted `needle_target`
/// with an unchanged registration resumes within a second instead of recording a new baseline.
/// It says which registration and correction markers it belongs to and when it was saved (on
/// tracker time); [`TargetComputer::resumed`] refuses it when any of that does not match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedBreathingState {
    /// [`SavedBreathingState::FORMAT`]; other formats are refused.
    pub format: u32,
    /// Stamp of the newest sample the state includes [ns, tracker time].
    pub saved_at_ns: i64,
    /// The registration it was recorded under (tracker frame) [m].
    pub image_to_tracker: Isometry3<f64>,
    pub lesion_tracker: Point3<f64>,
    pub entry_tracker: Point3<f64>,
    /// The correction markers asked for when it was recorded.
    pub correction_ids: Vec<u32>,
    pub baseline: Baseline,
    pub predictor: PredictorState,
}

impl SavedBreathingState {
    pub const FORMAT: u32 = 1;
}

/// Why a saved breathing state is not used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResumeRefused {
    #[error("format {found}, this version reads {expected}")]
    Format { found: u32, expected: u32 },
    #[error("saved for correction markers {saved:?}, the classification now has {now:?}")]
    OtherMarkers { saved: Vec<u32>, now: Vec<u32> },
    #[error("saved under another registration (lesion or entry {moved_mm:.2} mm, rotation {angle_deg:.2}° apart)")]
    OtherRegistration { moved_mm: f64, angle_deg: f64 },
    #[error("{age_s:.1} s old at the first sample (limit {limit_s} s)")]
    TooOld { age_s: f64, limit_s: f64 },
    #[error("saved {ahead_s:.1} s after the first sample (tracker time went back)")]
    FromTheFuture { ahead_s: f64 },
    #[error("saved with prediction {saved:?}, configured {now:?}")]
    OtherPrediction { saved: PredictionMethod, now: PredictionMethod },
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("malformed predictor: {0}")]
    Predictor(#[from] super::correction::PredictorStateError),
}

/// Registrations closer than this are the same one (a recomputed registration of the same
/// markers moves the lesion by far less; the node keeps its computer below this too) [m].
pub const SAME_REGISTRATION_M: f64 = 0.5e-3;
const SAME_REGISTRATION_RAD: f64 = 0.5 * std::f64::consts::PI / 180.0;

/// Turns tracker samples into corrected targets: records the baseline, fits the correlation
/// model on the CT phases, predicts ahead, gates.
#[derive(Debug, Clone)]
pub struct TargetComputer {
    case: PlanningCase,
    registration: RegisteredPlan,
    config: TargetConfig,
    /// The correction markers asked for (the classification's); `correction_ids` may narrow to the CT selection.
    requested_ids: Vec<u32>,
    correction_ids: Vec<u32>,
    /// Baseline samples being recorded: (time [s], correction markers in `requested_ids` order).
    recording: Vec<(f64, Vec<Point3<f64>>)>,
    recording_start_s: Option<f64>,
    baseline: Option<Baseline>,
    model: Option<CorrelationModel>,
    /// Predicts the surrogate; its history also gives the surrogate's rate.
    predictor: Predictor,
    /// The baseline was resumed from a saved state and no sample has confirmed it fits yet.
    resumed_unverified: bool,
}

/// The surrogate's rate is the least-squares slope over this window [s] ...
const RATE_WINDOW_S: f64 = 0.25;
/// ... and needs this much of it without a gap [s]: over a few milliseconds (the first samples
/// after an occlusion) tracker noise divided by the time step gave rates that put the target 20 mm off.
const RATE_MIN_SPAN_S: f64 = 0.15;

impl TargetComputer {
    pub fn new(
        case: PlanningCase,
        registration: RegisteredPlan,
        correction_ids: Vec<u32>,
        config: TargetConfig,
    ) -> TargetComputer {
        let predictor = Predictor::new(config.prediction);
        TargetComputer {
            case,
            registration,
            config,
            requested_ids: correction_ids.clone(),
            correction_ids,
            recording: Vec::new(),
            recording_start_s: None,
            baseline: None,
            model: None,
            predictor,
            resumed_unverified: false,
        }
    }

    /// New validity gates from the next sample on (a parameter set at run time): the deviation
    /// allowed from the baseline and, without a correlation model, the surrogate gate. The
    /// baseline, model and prediction state are kept.
    pub fn set_gates(&mut self, deviation_tolerance_m: f64, gate_surrogate: f64) {
        self.config.deviation_tolerance_m = deviation_tolerance_m;
        self.config.gate_surrogate = gate_surrogate;
    }

    pub fn config(&self) -> &TargetConfig {
        &self.config
    }

    /// Carries the breathing state of a computer for the same correction markers over to this one
    /// (a new registration): its baseline, and the prediction and rate history, which live in the
    /// tracker frame and do not depend on the registration.
    pub fn continuing(mut self, previous: &TargetComputer) -> TargetComputer {
        if previous.requested_ids != self.requested_ids {
            return self;
        }
        if let Some(b) = previous.baseline.clone() {
            self = self.with_baseline(b);
            self.predictor = previous.predictor.clone();
        }
        self
    }

    /// The breathing state to save, once there is a baseline; `newest_ns` is the stamp of the
    /// newest sample given to [`TargetComputer::update`].
    pub fn saved_state(&self, newest_ns: i64) -> Option<SavedBreathingState> {
        Some(SavedBreathingState {
            format: SavedBreathingState::FORMAT,
            saved_at_ns: newest_ns,
            image_to_tracker: self.registration.transform,
            lesion_tracker: self.registration.lesion_tracker,
            entry_tracker: self.registration.entry_tracker,
            correction_ids: self.requested_ids.clone(),
            baseline: self.baseline.clone()?,
            predictor: self.predictor.state(),
        })
    }

    /// Resumes from a saved state when it belongs to this registration and these correction
    /// markers, was saved with the same prediction method, and is at most `max_age_s` older than
    /// `first_sample_ns` (the first sample this computer will see). Otherwise it is refused and
    /// the computer records a new baseline as usual.
    pub fn resumed(
        self,
        saved: &SavedBreathingState,
        first_sample_ns: i64,
        max_age_s: f64,
    ) -> Result<TargetComputer, ResumeRefused> {
        if saved.format != SavedBreathingState::FORMAT {
            return Err(ResumeRefused::Format { found: saved.format, expected: SavedBreathingState::FORMAT });
        }
        if saved.correction_ids != self.requested_ids {
            return Err(ResumeRefused::OtherMarkers {
                saved: saved.correction_ids.clone(),
                now: self.requested_ids.clone(),
            });
        }
        let reg = &self.registration;
        let moved =
            (saved.lesion_tracker - reg.lesion_tracker).norm().max((saved.entry_tracker - reg.entry_tracker).norm());
        let angle = saved.image_to_tracker.rotation.angle_to(&reg.transform.rotation);
        if !(moved <= SAME_REGISTRATION_M && angle <= SAME_REGISTRATION_RAD) {
            return Err(ResumeRefused::OtherRegistration { moved_mm: moved * 1e3, angle_deg: angle.to_degrees() });
        }
        let age_s = (first_sample_ns as f64 - saved.saved_at_ns as f64) * 1e-9;
        if age_s < 0.0 {
            return Err(ResumeRefused::FromTheFuture { ahead_s: -age_s });
        }
        if !(age_s <= max_age_s) {
            return Err(ResumeRefused::TooOld { age_s, limit_s: max_age_s });
        }
        if saved.predictor.method != self.config.prediction {
            return Err(ResumeRefused::OtherPrediction { saved: saved.predictor.method, now: self.config.prediction });
        }
        saved.predictor.check()?;
        let b = &saved.baseline;
        let n = b.marker_ids.len();
        let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
        if n == 0
            || b.reference.len() != n
            || b.directions.len() != n
            || !(b.depth_m.is_finite() && b.depth_m > 0.0)
            || !b.reference.iter().all(|p| finite(p.coords.as_slice()))
            || !b.directions.iter().all(|d| finite(d.as_slice()))
            || b.trajectory.iter().any(|row| row.len() != n || !row.iter().all(|d| finite(d.as_slice())))
        {
            return Err(ResumeRefused::Malformed("baseline with missing or non-finite values".into()));
        }
        let mut resumed = self.with_baseline(b.clone());
        resumed.predictor = Predictor::restored(&saved.predictor);
        resumed.resumed_unverified = true;
        Ok(resumed)
    }

    /// Uses a baseline recorded earlier (or loaded from file) instead of recording one.
    pub fn with_baseline(mut self, baseline: Baseline) -> TargetComputer {
        self.correction_ids = baseline.marker_ids.clone();
        self.model = self.fit_model(&baseline);
        self.baseline = Some(baseline);
        self
    }

    pub fn plan(&self) -> &RegisteredPlan {
        &self.registration
    }

    pub fn correction_ids_requested(&self) -> &[u32] {
        &self.requested_ids
    }

    pub fn correction_ids(&self) -> &[u32] {
        &self.correction_ids
    }

    pub fn baseline(&self) -> Option<&Baseline> {
        self.baseline.as_ref()
    }

    pub fn model(&self) -> Option<&CorrelationModel> {
        self.model.as_ref()
    }

    /// Correlation model from the 4-D CT: correction markers mapped to the tracker frame by the
    /// registration, matched to tracker ids by proximity to the baseline's end-exhale positions.
    fn fit_model(&self, baseline: &Baseline) -> Option<CorrelationModel> {
        if self.case.phases.len() < 2 {
            return None;
        }
        let t = &self.registration.transform;
        let reference: Vec<Point3<f64>> = self.case.image_markers_m.iter().map(|p| t * p).collect();
        let index_of: Vec<usize> = baseline
            .reference
            .iter()
            .map(|b| {
                reference
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (i, (r - b).norm()))
                    .min_by(|x, y| x.1.total_cmp(&y.1))
                    .map(|x| x.0)
            })
            .collect::<Option<Vec<usize>>>()?;
        let phases = &self.case.phases;
        let s: Vec<f64> = phases
            .iter()
            .map(|ph| baseline.surrogate(&index_of.iter().map(|&i| t * ph.markers_m[i]).collect::<Vec<_>>()))
            .collect();
        // Rates by central differences around the (cyclic) 4-D CT cycle.
        let k = phases.len();
        let step = (phases[k - 1].time_s - phases[0].time_s) / (k - 1) as f64;
        let rate: Vec<f64> = (0..k).map(|i| (s[(i + 1) % k] - s[(i + k - 1) % k]) / (2.0 * step.max(1e-6))).collect();
        let lesion0 = phases[0].lesion_m;
        let d: Vec<Vector3<f64>> = phases
            .iter()
            .map(|ph| t.rotation * (ph.lesion_m - lesion0) + (t * lesion0 - t * self.case.lesion_m))
            .collect();
        CorrelationModel::fit(&s, &rate, &d).ok()
    }

    /// Records the baseline; with a CT selection of correction markers, keeps only the classified
    /// correction markers that are (by proximity after registration) the selected CT markers.
    fn record_selected(&mut self) -> Result<Baseline, CorrectionError> {
        let sets: Vec<Vec<Point3<f64>>> = self.recording.iter().map(|(_, set)| set.clone()).collect();
        let all = Baseline::record(self.correction_ids.clone(), &sets)?;
        let Some(selected) = &self.case.selected_correction else {
            return Ok(all);
        };
        let t = &self.registration.transform;
        let keep: Vec<usize> = all
            .reference
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                self.case
                    .image_markers_m
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (i, ((t * m) - **p).norm()))
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .is_some_and(|(i, d)| selected.contains(&i) && d < 0.01)
            })
            .map(|(k, _)| k)
            .collect();
        if keep.len() < 2 || keep.len() == all.marker_ids.len() {
            return Ok(all);
        }
        self.correction_ids = keep.iter().map(|&k| all.marker_ids[k]).collect();
        let subset: Vec<Vec<Point3<f64>>> = sets.iter().map(|s| keep.iter().map(|&k| s[k]).collect()).collect();
        Baseline::record(self.correction_ids.clone(), &subset)
    }

    /// The surrogate's rate [1/s]: the least-squares slope over the last `RATE_WINDOW_S`.
    fn rate(&self) -> Result<f64, InvalidReason> {
        self.predictor
            .slope(RATE_WINDOW_S, RATE_MIN_SPAN_S)
            .map_err(|e| InvalidReason::PredictionUnreliable(format!("breathing rate: {e}")))
    }

    /// The target for one sample taken at `t_s`, or why there is none.
    pub fn update(&mut self, t_s: f64, sample: &TrackerSample) -> Result<Target, InvalidReason> {
        let positions: Vec<Option<Point3<f64>>> =
            self.correction_ids.iter().map(|id| sample.usable().find(|m| m.id == *id).map(|m| m.position)).collect();
        let missing: Vec<u32> =
            self.correction_ids.iter().zip(&positions).filter(|(_, p)| p.is_none()).map(|(id, _)| *id).collect();
        if !missing.is_empty() {
            return Err(InvalidReason::MissingMarkers(missing));
        }
        let set: Vec<Point3<f64>> = positions.into_iter().flatten().collect();
        let Some(baseline) = &self.baseline else {
            let start = *self.recording_start_s.get_or_insert(t_s);
            self.recording.push((t_s, set));
            if t_s - start >= self.config.baseline_s {
                match self.record_selected() {
                    Ok(b) => {
                        self.model = self.fit_model(&b);
                        // The recording warms the predictor and rate up: valid targets from the next sample.
                        let columns: Vec<Option<usize>> =
                            b.marker_ids.iter().map(|id| self.requested_ids.iter().position(|r| r == id)).collect();
                        let recording = std::mem::take(&mut self.recording);
                        for (t, set) in &recording {
                            let ordered: Option<Vec<Point3<f64>>> =
                                columns.iter().map(|c| c.and_then(|c| set.get(c).copied())).collect();
                            if let Some(ordered) = ordered {
                                self.predictor.push(*t, b.surrogate(&ordered));
                            }
                        }
                        self.baseline = Some(b);
                    }
                    Err(CorrectionError::NoBreathing { .. }) | Err(_) => {
                        // Start over: the window did not hold usable calm breathing.
                        self.recording.clear();
                        self.recording_start_s = None;
                    }
                }
            }
            return Err(InvalidReason::NoBaseline);
        };
        let (s, deviation) = (baseline.surrogate(&set), baseline.deviation(&set));
        self.predictor.push(t_s, s);
        if deviation > self.config.deviation_tolerance_m && self.resumed_unverified {
            // The resumed baseline does not fit the breathing now (it drifted, or markers moved while
            // the node was down): record a new one rather than refuse for ever. A restart is also how
            // a user asks for a new baseline.
            tracing::warn!(
                "the resumed baseline departs {:.1} mm from the breathing now (tolerance {:.1} mm): recording a new one",
                deviation * 1e3,
                self.config.deviation_tolerance_m * 1e3
            );
            self.baseline = None;
            self.model = None;
            self.correction_ids = self.requested_ids.clone();
            self.predictor = Predictor::new(self.config.prediction);
            self.resumed_unverified = false;
            return Err(InvalidReason::NoBaseline);
        }
        self.resumed_unverified = false;
        if deviation > self.config.deviation_tolerance_m {
            return Err(InvalidReason::DeviationTooLarge {
                deviation_m: deviation,
                tolerance_m: self.config.deviation_tolerance_m,
            });
        }
        let s_ahead = self
            .predictor
            .predict(self.config.latency_s)
            .map_err(|e| InvalidReason::PredictionUnreliable(format!("breathing prediction: {e}")))?;
        let reg = &self.registration;
        let (target, model_rms) = match &self.model {
            Some(m) => (reg.lesion_tracker + m.lesion_displacement(s_ahead, self.rate()?), m.fit_rms_m),
            None => {
                if s_ahead > self.config.gate_surrogate {
                    return Err(InvalidReason::OutsideBreathingGate {
                        surrogate: s_ahead,
                        gate: self.config.gate_surrogate,
                    });
                }
                (reg.lesion_tracker, 0.0)
            }
        };
        let Some(baseline) = &self.baseline else { return Err(InvalidReason::NoBaseline) };
        let displacements = baseline.displacements(&set);
        let ahead: Vec<Vector3<f64>> = displacements
            .iter()
            .zip(&baseline.directions)
            .map(|(d, u)| d + u * (s_ahead - s) * baseline.depth_m)
            .collect();
        let entry = reg.entry_tracker
            + super::correction::interpolate_displacement(&reg.entry_tracker, &baseline.reference, &ahead);
        let v = target - entry;
        let depth = v.norm();
        Ok(Target {
            entry,
            target,
            direction: if depth > 0.0 { v / depth } else { Vector3::z() },
            depth_m: depth,
            predicted_error_m: (reg.tre_lesion_m.powi(2) + model_rms.powi(2)).sqrt(),
            deviation_m: deviation,
            surrogate: s_ahead,
            horizon_s: if self.config.prediction == PredictionMethod::None { 0.0 } else { self.config.latency_s },
        })
    }
}
