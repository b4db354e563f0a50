//! The declared parameters of each node's configuration: one entry per key of its parameter file
//! section (dotted for nested keys). Descriptions follow the comments in `config/<node>.yaml`;
//! ranges are those its `Validate` enforces (a bound `Validate` keeps open, as in `> 0`, is given
//! inclusive here and named in `constraints`). Dynamic: what a running node can take on from its
//! next sample without restarting anything (thresholds, gates, tolerances, sample checks).

use super::spec::{Mutability, ParameterSpec, Range};
use super::value::ParameterValue;
use needle_nav_core::interfaces::NodeKind;

use Mutability::{Dynamic, ReadOnly};

const NONE: Range = Range::None;

const fn f(min: f64, max: f64) -> Range {
    Range::Float { min, max, step: 0.0 }
}

const fn i(min: i64, max: i64) -> Range {
    Range::Integer { min, max, step: 1 }
}

const fn p(
    name: &'static str,
    description: &'static str,
    unit: &'static str,
    range: Range,
    mutability: Mutability,
    constraints: &'static str,
) -> ParameterSpec {
    ParameterSpec { name, description, unit, range, mutability, constraints }
}

/// The `sample_checks.*` keys every node that consumes tracker samples has; the validator takes
/// new limits from the next sample on.
const SAMPLE_CHECKS: [ParameterSpec; 6] = [
    p("sample_checks.max_markers", "more markers in one tracker sample are refused", "", i(1, 10_000), Dynamic, ""),
    p(
        "sample_checks.max_coordinate_m",
        "a coordinate farther than this from the tracker origin is refused",
        "m",
        f(0.01, 1000.0),
        Dynamic,
        "",
    ),
    p(
        "sample_checks.max_clock_offset_s",
        "a sample stamped further than this from the node's clock is refused; 0: no check",
        "s",
        f(0.0, 3600.0),
        Dynamic,
        "",
    ),
    p(
        "sample_checks.max_marker_speed_m_s",
        "a marker moving faster than this between samples jumped (id swap, reflection)",
        "m/s",
        f(0.001, 100.0),
        Dynamic,
        "",
    ),
    p(
        "sample_checks.jump_tolerance_m",
        "added to the speed limit for noise; one jumped marker is dropped, most markers at once refuse the sample",
        "m",
        f(0.0, 1.0),
        Dynamic,
        "",
    ),
    p(
        "sample_checks.accept_move_after_s",
        "a jump that persists this long is the marker's (or patient's) new position",
        "s",
        f(0.0, 600.0),
        Dynamic,
        "",
    ),
];

const MARKER_TRACKER: &[ParameterSpec] = &[
    p("source", "where marker positions come from: sim (digital patient, synthetic breathing) or trace (real ExtMarker breathing)", "", NONE, ReadOnly, "one of: sim, trace"),
    p("rate_hz", "sample rate (optical trackers: 60-400)", "Hz", f(10.0, 1000.0), ReadOnly, ""),
    p("frame_id", "frame of the published positions", "", NONE, ReadOnly, "not empty"),
    p("seed", "seed of the digital patient (anatomy, markers, CT pose) and of the tracker errors", "", i(0, i64::MAX), ReadOnly, ""),
    p("noise_rms_m", "localisation noise per marker, RMS of the 3-D error", "m", f(0.0, 0.01), ReadOnly, ""),
    p("latency_s", "acquisition-to-delivery delay; samples carry their acquisition stamp", "s", f(0.0, 1.0), ReadOnly, ""),
    p("dropout_probability", "chance that a marker is missing from one sample", "", f(0.0, 0.99), ReadOnly, ""),
    p("occlusion_rate_per_min", "occlusions per marker per minute (marker hidden, e.g. by the arm)", "1/min", f(0.0, 60.0), ReadOnly, ""),
    p("occlusion_duration_s", "length of an occlusion", "s", f(0.0, 60.0), ReadOnly, ""),
    p("id_swap_rate_per_min", "tracker id swaps between two markers per minute", "1/min", f(0.0, 60.0), ReadOnly, ""),
    p("id_swap_duration_s", "length of an id swap", "s", f(0.0, 60.0), ReadOnly, ""),
    p("breathing.seed", "seed of the synthetic breathing", "", i(0, i64::MAX), ReadOnly, ""),
    p("breathing.mean_period_s", "mean breathing period", "s", f(0.5, 30.0), ReadOnly, ""),
    p("breathing.period_cv", "cycle-to-cycle variation of the period (coefficient of variation)", "", f(0.0, 1.0), ReadOnly, ""),
    p("breathing.amplitude_cv", "cycle-to-cycle variation of the depth (coefficient of variation)", "", f(0.0, 1.0), ReadOnly, ""),
    p("breathing.shape_n", "Lujan exponent: 1 sinusoidal, 2-3 flat end-exhale", "", i(1, 4), ReadOnly, ""),
    p("breathing.drift_per_min", "baseline drift, in normal breath depths per minute", "1/min", f(-10.0, 10.0), ReadOnly, ""),
    p("breathing.deep_breath_probability", "probability that a cycle is a deep breath", "", f(0.0, 1.0), ReadOnly, ""),
    p("breathing.deep_breath_amplitude", "amplitude multiplier of a deep breath", "", f(1.0, 10.0), ReadOnly, ""),
    p("breathing.deep_breath_period_scale", "period multiplier of a deep breath", "", f(0.5, 4.0), ReadOnly, ""),
    p("breathing.cough_rate_per_min", "coughs per minute (Poisson rate)", "1/min", f(0.0, 60.0), ReadOnly, ""),
    p("breathing.cough_amplitude", "peak of a cough bump, in normal breath depths", "", f(0.0, 10.0), ReadOnly, ""),
    p("breathing.cough_duration_s", "duration of a cough bump", "s", f(0.0, 5.0), ReadOnly, "> 0"),
    p("trace_dir", "trace: ExtMarker folder; empty: the shared data set", "", NONE, ReadOnly, ""),
    p("trace_session", "trace: session id, e.g. 201205101519; empty: the first", "", NONE, ReadOnly, ""),
    p("trace_marker", "trace: marker whose motion drives the breathing, e.g. LAC; empty: the first", "", NONE, ReadOnly, ""),
    p("publish_ground_truth", "publish needle_nav/debug/ground_truth (the digital patient's truth)", "", NONE, ReadOnly, ""),
    p("publish_visualization", "publish needle_nav/viz/markers for rviz", "", NONE, ReadOnly, ""),
];

const MARKER_CLASSIFIER: &[ParameterSpec] = &[
    p(
        "feature",
        "displacement feature per marker",
        "",
        NONE,
        ReadOnly,
        "one of: peak_to_peak, max_minus_mean, second_range",
    ),
    p(
        "method",
        "how markers are split into registration and correction markers",
        "",
        NONE,
        ReadOnly,
        "one of: threshold, top_n, class_ranges, learned",
    ),
    p("threshold_m", "threshold: feature >= this -> correction marker", "m", f(0.0, 0.1), Dynamic, "> 0"),
    p(
        "hysteresis_m",
        "a marker changes class only beyond threshold +- this (top_n: rank bonus)",
        "m",
        f(0.0, 0.1),
        Dynamic,
        "at most threshold_m",
    ),
    p("top_n", "top_n: this many largest-feature markers are correction markers", "", i(1, 64), Dynamic, ""),
    p(
        "registration_range_m",
        "class_ranges: feature range [low, high] of registration markers",
        "m",
        NONE,
        ReadOnly,
        "2 values, 0 <= low <= high",
    ),
    p(
        "correction_range_m",
        "class_ranges: feature range [low, high] of correction markers",
        "m",
        NONE,
        ReadOnly,
        "2 values, 0 <= low <= high, low >= registration_range_m high",
    ),
    p("model_path", "learned: logistic-regression model (JSON)", "", NONE, ReadOnly, "not empty for method learned"),
    p("window_s", "sliding window over several breaths", "s", f(1.0, 120.0), ReadOnly, ""),
    p("min_window_fill", "classify only once this fraction of the window is filled", "", f(0.1, 1.0), Dynamic, ""),
    p("motion_modes.enabled", "recognise lateral / expansion / longitudinal skin motion", "", NONE, ReadOnly, ""),
    p(
        "motion_modes.similarity_threshold",
        "cosine similarity to a mode's template needed to recognise it",
        "",
        f(0.0, 1.0),
        Dynamic,
        "",
    ),
    p(
        "motion_modes.tracker_to_patient",
        "rotation tracker -> patient (L, P, S), row-major; empty: from the latest registration",
        "",
        NONE,
        ReadOnly,
        "empty or 9 numbers forming a rotation matrix",
    ),
    p(
        "correction_region.kind",
        "only markers inside can be correction markers (tracker frame)",
        "",
        NONE,
        ReadOnly,
        "one of: none, box, polygon",
    ),
    p("correction_region.box_min_m", "box: corner [x, y, z]", "m", NONE, ReadOnly, "3 values, each below box_max_m"),
    p("correction_region.box_max_m", "box: opposite corner [x, y, z]", "m", NONE, ReadOnly, "3 values"),
    p(
        "correction_region.polygon_xy_m",
        "polygon: vertices [x0, y0, x1, y1, ...] in the tracker x-y plane",
        "m",
        NONE,
        ReadOnly,
        ">= 3 vertices",
    ),
    p("correction_region.polygon_z_m", "polygon: [z_min, z_max]", "m", NONE, ReadOnly, "2 values, z_min < z_max"),
];

const LESION_REGISTRATION: &[ParameterSpec] = &[
    p("ct_case_dir", "planning CT case folder; empty: status NO_IMAGE_DATA", "", NONE, ReadOnly, ""),
    p("image_frame_id", "frame of CT patient coordinates (LPS)", "", NONE, ReadOnly, "not empty"),
    p("min_markers", "fewest markers for a registration", "", i(3, 4_294_967_295), Dynamic, ""),
    p("max_outliers", "most markers leave-one-out may exclude", "", i(0, 10), Dynamic, ""),
    p("max_fre_m", "refuse a registration with a larger RMS FRE", "m", f(0.0, 0.05), Dynamic, "> 0"),
    p("fle_rms_m", "fiducial localisation error assumed for the predicted TRE", "m", f(0.0, 0.01), Dynamic, "> 0"),
    p(
        "min_spread_ratio",
        "2nd/1st principal spread of the markers below this: degenerate (near-collinear)",
        "",
        f(0.0, 1.0),
        Dynamic,
        "",
    ),
    p(
        "correspondence_tolerance_m",
        "inter-marker distances must agree within this to match CT and tracker markers",
        "m",
        f(0.0, 0.05),
        Dynamic,
        "> 0",
    ),
    p(
        "window_s",
        "tracker samples used to find the markers at the CT's (end-exhale) phase",
        "s",
        f(1.0, 120.0),
        ReadOnly,
        "",
    ),
    p("update_period_s", "recompute the registration this often", "s", f(0.1, 60.0), ReadOnly, ""),
    p("marker_threshold_hu", "radiopaque marker threshold in the CT", "HU", f(500.0, 30000.0), ReadOnly, ""),
    p(
        "scan_margin_m",
        "the lesion (centre + radius) must lie this far inside every edge of the planning CT",
        "m",
        f(0.0, 0.1),
        ReadOnly,
        "",
    ),
    p(
        "target_air_below_hu",
        "median HU within 3 mm of the target below this: air, no lesion there",
        "HU",
        f(-1100.0, -300.0),
        ReadOnly,
        "",
    ),
    p(
        "target_bone_above_hu",
        "median HU within 3 mm of the target above this: bone, no lesion there",
        "HU",
        f(100.0, 3000.0),
        ReadOnly,
        "",
    ),
    p("entry_source", "where the entry point comes from", "", NONE, ReadOnly, "one of: preset, plan, manual"),
    p(
        "manual_entry_ct_m",
        "entry point [x, y, z] in the CT frame, used when entry_source is manual",
        "m",
        NONE,
        ReadOnly,
        "3 finite values when entry_source is manual",
    ),
];

const NEEDLE_TARGET: &[ParameterSpec] = &[
    p("frame_id", "frame of the published target", "", NONE, ReadOnly, "not empty"),
    p(
        "ct_case_dir",
        "planning CT case (4-D CT phases give the correlation model); same as lesion_registration",
        "",
        NONE,
        ReadOnly,
        "",
    ),
    p(
        "tracker_rate_hz",
        "nominal tracker rate; staleness is counted in its periods",
        "Hz",
        f(0.0, 1000.0),
        ReadOnly,
        "> 0",
    ),
    p(
        "stale_after_periods",
        "a tracker sample older than this many tracker periods is stale",
        "",
        f(1.0, 1000.0),
        Dynamic,
        "",
    ),
    p(
        "deviation_tolerance_m",
        "breathing deviation from the baseline beyond which the target is invalid",
        "m",
        f(0.0, 0.1),
        Dynamic,
        "> 0",
    ),
    p("robot_latency_s", "predict ahead by the robot's latency", "s", f(0.0, 1.0), ReadOnly, ""),
    p(
        "prediction",
        "prediction across the latency (refused for 0.8 s after a gap and while breathing is irregular)",
        "",
        NONE,
        ReadOnly,
        "one of: none, linear, autoregressive",
    ),
    p("baseline_s", "calm breathing recorded as the baseline", "s", f(2.0, 600.0), ReadOnly, ""),
    p(
        "baseline_file",
        "load the baseline from this JSON file, or save a recorded one to it; empty: record each start",
        "",
        NONE,
        ReadOnly,
        "",
    ),
    p(
        "state_file",
        "save the breathing state here every second and resume from it after a restart; empty: off",
        "",
        NONE,
        ReadOnly,
        "not the baseline_file",
    ),
    p(
        "state_max_age_s",
        "a saved state older than this at the first sample after a restart is not used",
        "s",
        f(0.0, 3600.0),
        ReadOnly,
        "",
    ),
    p(
        "gate_surrogate",
        "without a 4-D CT model: valid only while breathing is below this fraction of a breath",
        "",
        f(0.0, 1.0),
        Dynamic,
        "",
    ),
    p(
        "search_radius_m",
        "use only correction markers within this distance of the preset entry; 0: all",
        "m",
        f(0.0, 1.0),
        ReadOnly,
        "",
    ),
    p(
        "combination_min_markers",
        "candidate marker combinations of this many markers ...",
        "",
        i(2, 8),
        ReadOnly,
        "at most combination_max_markers",
    ),
    p(
        "combination_max_markers",
        "... up to this many; the one whose entry-displacement features agree best is used",
        "",
        i(2, 8),
        ReadOnly,
        "",
    ),
    p(
        "combination_criterion",
        "agreement of the features: range (max - min, the method's) or standard_deviation",
        "",
        NONE,
        ReadOnly,
        "one of: range, standard_deviation",
    ),
];

const VESSEL_SEGMENTATION: &[ParameterSpec] = &[
    p("model_path", "ONNX model; empty: the model shipped with the package", "", NONE, ReadOnly, ""),
    p("max_input_voxels", "refuse larger inputs (memory guard)", "", i(32 * 32 * 32, i64::MAX), ReadOnly, ""),
    p("threads", "inference threads", "", i(1, 64), ReadOnly, ""),
    p("queue_when_busy", "queue (true) or refuse (false) a request while one runs", "", NONE, ReadOnly, ""),
    p("max_queue", "queued requests beyond this are refused", "", i(0, 16), ReadOnly, ""),
    p(
        "overwrite_results",
        "a request into a folder with an earlier result: replace it (true) or refuse (false)",
        "",
        NONE,
        ReadOnly,
        "",
    ),
    p(
        "skip_unreadable_slices",
        "DICOM: leave out unreadable slices with a warning (true) or refuse the series (false)",
        "",
        NONE,
        ReadOnly,
        "",
    ),
    p(
        "worker_scheduling",
        "scheduling class of the worker (idle: only CPU time guidance leaves)",
        "",
        NONE,
        ReadOnly,
        "one of: idle, batch, normal",
    ),
];

const TRAJECTORY_PLANNER: &[ParameterSpec] = &[
    p(
        "ct_case_dir",
        "planning case folder (case.json): its CT and lesion; overrides ct_path and target_point_m",
        "",
        NONE,
        ReadOnly,
        "",
    ),
    p("ct_path", "planning CT (DICOM folder or NIfTI); empty: no plan", "", NONE, ReadOnly, ""),
    p(
        "ct_study_instance_uid",
        "planning CT from the PACS (pacs.*): its study; with ct_series_instance_uid, instead of ct_path",
        "",
        NONE,
        ReadOnly,
        "a DICOM UID; with ct_series_instance_uid",
    ),
    p(
        "ct_series_instance_uid",
        "planning CT from the PACS: its series, retrieved into output_dir/pacs_input/",
        "",
        NONE,
        ReadOnly,
        "a DICOM UID; with ct_study_instance_uid",
    ),
    p("target_point_m", "target [x, y, z] in the CT frame (LPS), with ct_path", "m", NONE, ReadOnly, "3 finite values"),
    p(
        "lesion_radius_m",
        "lesion radius around the target, with ct_path (a case folder gives its own)",
        "m",
        f(0.0, 0.05),
        ReadOnly,
        "",
    ),
    p(
        "ignore_vessel_labels_in_lesion",
        "vessel labels inside the lesion radius are lesion, not obstacles",
        "",
        NONE,
        ReadOnly,
        "",
    ),
    p("output_dir", "where the segmentation outputs go", "", NONE, ReadOnly, ""),
    p("image_frame_id", "frame of CT patient coordinates (LPS)", "", NONE, ReadOnly, "not empty"),
    p("service_timeout_s", "segmentation service call timeout", "s", f(0.0, 3600.0), ReadOnly, "> 0"),
    p(
        "safety_margin_m",
        "refuse paths closer than this to a vessel (network or contrast layer)",
        "m",
        f(0.0, 0.05),
        ReadOnly,
        "",
    ),
    p(
        "instrument_length_m",
        "usable needle length: longer skin-to-target paths are refused",
        "m",
        f(0.0, 0.5),
        ReadOnly,
        "> 0",
    ),
    p("max_angle_deg", "largest angle from approach_direction", "deg", f(0.0, 90.0), ReadOnly, ""),
    p(
        "approach_direction",
        "preferred direction target -> skin, CT frame (LPS), unit vector [x, y, z]",
        "",
        NONE,
        ReadOnly,
        "3 values, norm 1",
    ),
    p(
        "entry_region_m",
        "entry box [x0, x1, y0, y1, z0, z1], CT frame",
        "m",
        NONE,
        ReadOnly,
        "6 values, each min < max",
    ),
    p("bone_hu", "voxels at or above this HU are bone (obstacles)", "HU", f(100.0, 3000.0), ReadOnly, ""),
    p("directions", "straight paths tried in the cone", "", i(10, 100_000), ReadOnly, ""),
    p(
        "alternatives",
        "other passing paths reported with the chosen one (entries >= 10 mm apart)",
        "",
        i(0, 20),
        ReadOnly,
        "",
    ),
    p("margins.bone_m", "clearance each path keeps from bone", "m", f(0.0, 0.05), ReadOnly, ""),
    p(
        "margins.mediastinum_m",
        "clearance from heart, great vessels, trachea, oesophagus (no-go)",
        "m",
        f(0.0, 0.05),
        ReadOnly,
        "",
    ),
    p("margins.lung_vessels_m", "clearance from lung vessels", "m", f(0.0, 0.05), ReadOnly, ""),
    p("margins.airways_m", "clearance from airways", "m", f(0.0, 0.05), ReadOnly, ""),
    p(
        "limits.max_pleural_crossings",
        "entering or leaving a lung counts one; 1: a lung target entered once",
        "",
        i(0, 10),
        ReadOnly,
        "",
    ),
    p("limits.refuse_fissure_crossings", "refuse crossing a detected lung fissure", "", NONE, ReadOnly, ""),
    p(
        "limits.max_pleural_angle_deg",
        "needle to pleural normal where it enters the lung",
        "deg",
        f(0.0, 90.0),
        ReadOnly,
        "",
    ),
    p(
        "limits.rib_margin_m",
        "distance from bone along the chest-wall part (skin to pleura)",
        "m",
        f(0.0, 0.05),
        ReadOnly,
        "",
    ),
    p("limits.chest_wall_depth_m", "chest-wall part when no lung is entered", "m", f(0.0, 0.2), ReadOnly, "> 0"),
    p("weights.clearance", "cost per layer: 1 - clearance / comfortable_clearance_m", "", f(0.0, 100.0), ReadOnly, ""),
    p(
        "weights.comfortable_clearance_m",
        "clearance at which the clearance cost reaches 0",
        "m",
        f(0.0, 0.1),
        ReadOnly,
        "> 0",
    ),
    p("weights.lung_length_per_cm", "cost per cm of aerated lung crossed", "", f(0.0, 100.0), ReadOnly, ""),
    p("weights.pleural_angle", "cost per 90 deg from the pleural normal", "", f(0.0, 100.0), ReadOnly, ""),
    p("weights.length_per_10cm", "cost per 10 cm of path", "", f(0.0, 100.0), ReadOnly, ""),
    p("weights.approach_angle", "cost per 90 deg from approach_direction", "", f(0.0, 100.0), ReadOnly, ""),
    p("obstacles.lung_hu", "aerated lung below this HU", "HU", f(-1000.0, 0.0), ReadOnly, ""),
    p(
        "obstacles.lung_vessel_min_diameter_m",
        "lung vessels this thick and thicker (Hessian vesselness) ...",
        "m",
        f(0.0, 0.05),
        ReadOnly,
        "> 0",
    ),
    p(
        "obstacles.lung_vessel_max_diameter_m",
        "... up to this scale",
        "m",
        f(0.0, 0.05),
        ReadOnly,
        "at least lung_vessel_min_diameter_m",
    ),
    p("obstacles.lung_vessel_vesselness", "vesselness threshold", "", f(0.0, 1.0), ReadOnly, ""),
    p(
        "obstacles.airway_min_diameter_m",
        "airways with at least this lumen diameter",
        "m",
        f(0.0, 0.05),
        ReadOnly,
        "> 0",
    ),
    p(
        "obstacles.contrast_vessel_hu",
        "contrast blood window [low, high], grown from the network's vessels when they are enhanced",
        "HU",
        NONE,
        ReadOnly,
        "2 values, low < high",
    ),
    p(
        "obstacles.contrast_vessel_max_growth_m",
        "... at most this far (trabecular bone shares the window)",
        "m",
        f(0.0, 0.1),
        ReadOnly,
        "> 0",
    ),
    p("obstacles.detect_fissures", "detect lung fissures", "", NONE, ReadOnly, ""),
];

const IGTL_BRIDGE: &[ParameterSpec] = &[
    p(
        "tracker.mode",
        "client: connect to a PLUS Server; server: listen, the tracker connects",
        "",
        NONE,
        ReadOnly,
        "one of: client, server",
    ),
    p(
        "tracker.host",
        "client: the tracker server's host; server: the address to listen on",
        "",
        NONE,
        ReadOnly,
        "not empty",
    ),
    p("tracker.port", "the tracker connection's TCP port (PLUS: 18944)", "", i(1, 65535), ReadOnly, ""),
    p("slicer_enabled", "talk to 3D Slicer at all", "", NONE, ReadOnly, ""),
    p(
        "slicer.mode",
        "server: listen, Slicer's connector is a client; client: connect to Slicer's server",
        "",
        NONE,
        ReadOnly,
        "one of: client, server",
    ),
    p("slicer.host", "server: the address to listen on; client: Slicer's host", "", NONE, ReadOnly, "not empty"),
    p("slicer.port", "the Slicer connection's TCP port", "", i(1, 65535), ReadOnly, ""),
    p(
        "device_names",
        "OpenIGTLink device (or TDATA/POINT element) names, each mapped to the marker id at its index",
        "",
        NONE,
        ReadOnly,
        "distinct, 1 to 64 characters",
    ),
    p("marker_ids", "marker id of each device name, same order", "", NONE, ReadOnly, "one per device name, distinct"),
    p("frame_id", "frame of the published positions", "", NONE, ReadOnly, "not empty"),
    p(
        "backoff_initial_s",
        "first wait before reconnecting; doubles on each failure",
        "s",
        f(0.0, 60.0),
        ReadOnly,
        "> 0",
    ),
    p(
        "backoff_max_s",
        "longest wait between connection attempts",
        "s",
        f(0.0, 600.0),
        ReadOnly,
        "at least backoff_initial_s",
    ),
    p(
        "max_message_bytes",
        "largest message body accepted; larger ones are counted oversized and skipped",
        "",
        i(1024, 1 << 32),
        ReadOnly,
        "",
    ),
    p(
        "device_timeout_s",
        "a device not heard from for this long (tracker time) is published invisible",
        "s",
        f(0.0, 60.0),
        ReadOnly,
        "> 0",
    ),
    p(
        "frame_window_s",
        "a tracker frame is published at the latest this long after its first message",
        "s",
        f(0.0, 1.0),
        ReadOnly,
        "",
    ),
    p(
        "expected_rate_hz",
        "the tracker's frame rate, for the output rate in /diagnostics",
        "Hz",
        f(0.0, 1000.0),
        ReadOnly,
        "> 0",
    ),
];

/// The `pacs.*` keys of the nodes that take series from a PACS (vessel_segmentation,
/// trajectory_planner); read at start (a new PACS needs a restart of the node).
const PACS: [ParameterSpec; 11] = [
    p("pacs.host", "host of the PACS's DICOM port; empty: no PACS", "", NONE, ReadOnly, "no white space"),
    p("pacs.port", "the PACS's DICOM port", "", i(1, 65_535), ReadOnly, ""),
    p(
        "pacs.called_ae_title",
        "the PACS's own AE title",
        "",
        NONE,
        ReadOnly,
        "1-16 printable ASCII characters, no backslash",
    ),
    p(
        "pacs.calling_ae_title",
        "our AE title: the PACS must know it as a modality (with this host and a port) to send us images",
        "",
        NONE,
        ReadOnly,
        "1-16 printable ASCII characters, no backslash",
    ),
    p("pacs.connect_timeout_s", "time to open the TCP connection", "s", f(0.0, 3600.0), ReadOnly, "> 0"),
    p("pacs.timeout_s", "longest wait for any one answer of the PACS", "s", f(0.0, 3600.0), ReadOnly, "> 0"),
    p("pacs.tls.enabled", "DICOM over TLS", "", NONE, ReadOnly, ""),
    p(
        "pacs.tls.ca_file",
        "PEM certificate(s) of the authority that signed the PACS's certificate",
        "",
        NONE,
        ReadOnly,
        "required with TLS",
    ),
    p(
        "pacs.tls.client_cert_file",
        "PEM client certificate; empty: none",
        "",
        NONE,
        ReadOnly,
        "set with client_key_file",
    ),
    p(
        "pacs.tls.client_key_file",
        "PEM private key of the client certificate",
        "",
        NONE,
        ReadOnly,
        "set with client_cert_file",
    ),
    p("pacs.tls.server_name", "name the PACS's certificate must carry; empty: pacs.host", "", NONE, ReadOnly, ""),
];

/// The declared parameters of `kind`'s configuration (its parameter file keys).
pub fn config_specs(kind: NodeKind) -> Vec<ParameterSpec> {
    let (own, sample_checks): (&[ParameterSpec], bool) = match kind {
        NodeKind::MarkerTracker => (MARKER_TRACKER, false),
        NodeKind::MarkerClassifier => (MARKER_CLASSIFIER, true),
        NodeKind::LesionRegistration => (LESION_REGISTRATION, true),
        NodeKind::NeedleTarget => (NEEDLE_TARGET, true),
        NodeKind::VesselSegmentation => (VESSEL_SEGMENTATION, false),
        NodeKind::TrajectoryPlanner => (TRAJECTORY_PLANNER, false),
        NodeKind::IgtlBridge => (IGTL_BRIDGE, false),
    };
    let mut specs = own.to_vec();
    if sample_checks {
        specs.extend_from_slice(&SAMPLE_CHECKS);
    }
    if matches!(kind, NodeKind::VesselSegmentation | NodeKind::TrajectoryPlanner) {
        specs.extend_from_slice(&PACS);
    }
    specs
}

/// A parameter every node has that the runtime owns, not the node's configuration: its value comes
/// from the command line (`--ros-args -p use_sim_time:=true`), else `default`, and is read once at start.
#[derive(Debug, Clone, PartialEq)]
pub struct StandardParameter {
    pub spec: ParameterSpec,
    pub default: ParameterValue,
}

/// The runtime-owned parameters; extend this list for further ones (e.g. a lifecycle `autostart`).
/// The shell declares them read-only with the value given at start, and leaves them out of the
/// node's configuration.
pub const STANDARD_PARAMETERS: &[StandardParameter] = &[StandardParameter {
    spec: p(
        "use_sim_time",
        "the node's ROS clock follows /clock (bag replay); read at start: restart the node with -p use_sim_time:=true to change it",
        "",
        NONE,
        ReadOnly,
        "",
    ),
    default: ParameterValue::Bool(false),
}, StandardParameter {
    spec: p(
        "autostart",
        "true: the node configures and activates itself at start; false: it starts unconfigured and waits for a lifecycle manager (ros2 lifecycle set); read at start",
        "",
        NONE,
        ReadOnly,
        "",
    ),
    default: ParameterValue::Bool(true),
}];
