//! needle_target: the breathing-corrected needle target at tracker rate, gated. A target that
//! fails any gate is published with valid = false and the reason; the PoseStamped for generic arm
//! controllers and the rviz markers are published only for valid targets. A watchdog publishes
//! STALE when the tracker stops, so an old target is never left standing as valid.

use super::{config, lock, publisher, subscription, SampleGate};
use needle_nav_config::NeedleTargetConfig;
use needle_nav_core::correction::Baseline;
use needle_nav_core::ct_markers::MarkerDetectionConfig;
use needle_nav_core::guidance::{
    PlanningCase, RegisteredPlan, SavedBreathingState, Target, TargetComputer, TargetConfig, SAME_REGISTRATION_M,
};
use needle_nav_core::target_gate::{self, GateInputs, InvalidReason};
use needle_nav_core::interfaces::{frames, CLASSIFICATION, MARKERS, REGISTRATION, TARGET, TARGET_POSE, TF, VIZ_TARGET};
use crate::convert;
use crate::msg;
use crate::runtime::{NodeContext, NodeError};
use futures::StreamExt;
use nalgebra::{Point3, UnitQuaternion, Vector3};
use r2r::geometry_msgs::msg::{PoseStamped, TransformStamped};
use r2r::tf2_msgs::msg::TFMessage;
use r2r::visualization_msgs::msg::{Marker, MarkerArray};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NAME: &str = "needle_target";

#[derive(Default)]
struct State {
    newest_sample_ns: Option<i64>,
    newest_source_stamp: r2r::builtin_interfaces::msg::Time,
    registration: Option<msg::LesionRegistration>,
    correction_ids: Vec<u32>,
    case: Option<PlanningCase>,
    computer: Option<TargetComputer>,
    /// The last second of samples: a new computer starts from the first sample after its
    /// registration's stamp, however late the registration arrived (so a replay repeats the live run).
    recent: std::collections::VecDeque<needle_nav_core::tracking::TrackerSample>,

    baseline_saved: bool,
    /// A breathing state saved before a restart, tried once on the first target computer.
    resume: Option<SavedBreathingState>,
    /// Tracker time of the last state saved [ns].
    state_saved_ns: Option<i64>,
    /// Where saving is refused because the file there is not ours (never overwritten).
    state_file_refused: bool,
    /// The planning case arrived after the current computer was built.
    case_changed: bool,
}

/// The breathing state is saved this often (tracker time) [ns].
const STATE_SAVE_PERIOD_NS: i64 = 1_000_000_000;

/// The saved breathing state, if `path` holds one. A file that is not one is reported and
/// never overwritten (second value true): the parameter may point at something of the user's.
fn read_state_file(path: &str) -> (Option<SavedBreathingState>, bool) {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, false),
        Err(e) => {
            tracing::error!(node = NAME, "state_file {path} cannot be read ({e}): not used, not overwritten");
            (None, true)
        }
        Ok(text) => match serde_json::from_str::<SavedBreathingState>(&text) {
            Ok(saved) => (Some(saved), false),
            Err(e) => {
                tracing::error!(
                    node = NAME,
                    "state_file {path} is not a saved breathing state ({e}): not used, and not overwritten"
                );
                (None, true)
            }
        },
    }
}

fn save_state_file(path: &str, state: &SavedBreathingState) {
    match serde_json::to_vec(state)
        .map(|bytes| needle_nav_imaging::output_files::write_file_atomically(std::path::Path::new(path), &bytes))
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(node = NAME, "cannot save the breathing state to {path}: {e}"),
        Err(e) => tracing::warn!(node = NAME, "cannot encode the breathing state: {e}"),
    }
}

/// The baseline in `baseline_file` when it holds one for `correction_ids`. Anything else there is
/// reported; the file is kept either way (a recorded baseline is saved only where none exists).
fn load_baseline_file(cfg: &NeedleTargetConfig, correction_ids: &[u32]) -> Option<Baseline> {
    if cfg.baseline_file.is_empty() {
        return None;
    }
    let path = &cfg.baseline_file;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::error!(node = NAME, "baseline_file {path} cannot be read ({e}): recording a new baseline");
            return None;
        }
    };
    match serde_json::from_str::<Baseline>(&text) {
        Err(e) => {
            tracing::error!(
                node = NAME,
                "baseline_file {path} is not a baseline ({e}): recording a new one; the file is kept as it is"
            );
            None
        }
        Ok(b) if b.marker_ids != correction_ids => {
            tracing::warn!(
                node = NAME,
                "baseline_file {path} is for correction markers {:?}, the classification has {correction_ids:?}: \
                 recording a new baseline; the file is kept",
                b.marker_ids
            );
            None
        }
        Ok(b) => Some(b),
    }
}

/// Saves a recorded baseline where no file exists yet; an existing file is never replaced.
fn save_baseline_file(path: &str, b: &Baseline) {
    if std::path::Path::new(path).exists() {
        tracing::info!(node = NAME, "baseline_file {path} exists: the new baseline is not saved over it");
        return;
    }
    match serde_json::to_vec(b)
        .map(|bytes| needle_nav_imaging::output_files::write_file_atomically(std::path::Path::new(path), &bytes))
    {
        Ok(Ok(())) => tracing::info!(node = NAME, "baseline saved to {path}"),
        Ok(Err(e)) => tracing::warn!(node = NAME, "cannot save the baseline to {path}: {e}"),
        Err(e) => tracing::warn!(node = NAME, "cannot encode the baseline: {e}"),
    }
}

/// How much sample history is kept to catch a new registration up [ns].
const CATCH_UP_NS: i64 = 1_000_000_000;

fn registration_usable(r: &Option<msg::LesionRegistration>) -> Result<(), String> {
    match r {
        None => Err("no registration received".into()),
        Some(r) if convert::registration_usable(r) => Ok(()),
        Some(r) => Err(format!("registration status {}: {}", r.status, r.status_message)),
    }
}

fn reason_code(r: &InvalidReason) -> u8 {
    match r {
        InvalidReason::Starting => msg::NeedleTarget::REASON_STARTING as u8,
        InvalidReason::InvalidInput(_) => msg::NeedleTarget::REASON_INVALID_INPUT as u8,
        InvalidReason::StaleData { .. } => msg::NeedleTarget::REASON_STALE_DATA as u8,
        InvalidReason::NoRegistration(_) => msg::NeedleTarget::REASON_NO_REGISTRATION as u8,
        InvalidReason::NoBaseline => msg::NeedleTarget::REASON_NO_BASELINE as u8,
        InvalidReason::MissingMarkers(_) => msg::NeedleTarget::REASON_MISSING_MARKERS as u8,
        InvalidReason::PredictionUnreliable(_) => msg::NeedleTarget::REASON_PREDICTION_UNRELIABLE as u8,
        InvalidReason::DeviationTooLarge { .. } | InvalidReason::OutsideBreathingGate { .. } => {
            msg::NeedleTarget::REASON_DEVIATION_TOO_LARGE as u8
        }
    }
}

/// (Re)builds the target computer when the registration or the correction markers change; a
/// baseline of the same correction markers is kept (it lives in the tracker frame).
fn ensure_computer(s: &mut State, cfg: &NeedleTargetConfig, sample_ns: i64) {
    let Some(reg) = &s.registration else { return };
    if registration_usable(&s.registration).is_err() || s.correction_ids.is_empty() {
        s.computer = None;
        return;
    }
    let plan = RegisteredPlan {
        transform: convert::transform_from_msg(&reg.image_to_tracker),
        lesion_tracker: convert::point_from_msg(&reg.lesion_position),
        entry_tracker: convert::point_from_msg(&reg.reference_entry_point),
        tre_lesion_m: reg.predicted_tre_lesion,
    };
    // Runs for every tracker sample: rebuild only when the correction markers changed or the
    // registration moved the lesion or entry by more than 0.5 mm (a recomputed registration of the
    // same markers moves far less); the baseline, in the tracker frame, is kept either way.
    if let Some(c) = &s.computer {
        let moved = (c.plan().lesion_tracker - plan.lesion_tracker)
            .norm()
            .max((c.plan().entry_tracker - plan.entry_tracker).norm());
        if c.correction_ids_requested() == s.correction_ids.as_slice()
            && moved <= SAME_REGISTRATION_M
            && !s.case_changed
        {
            return;
        }
    }
    s.case_changed = false;
    let case = s.case.clone().unwrap_or_else(|| PlanningCase::without_images(&plan));
    let target_cfg = TargetConfig {
        baseline_s: cfg.baseline_s,
        deviation_tolerance_m: cfg.deviation_tolerance_m,
        latency_s: cfg.robot_latency_s,
        prediction: cfg.prediction,
        gate_surrogate: cfg.gate_surrogate,
    };
    let previous = s
        .computer
        .take()
        .filter(|c| c.correction_ids_requested() == s.correction_ids.as_slice() && c.baseline().is_some());
    let mut computer = TargetComputer::new(case, plan, s.correction_ids.clone(), target_cfg);
    let resumed = match (previous.is_none(), s.resume.take()) {
        (true, Some(saved)) => match computer.clone().resumed(&saved, sample_ns, cfg.state_max_age_s) {
            Ok(c) => {
                tracing::info!(
                    node = NAME,
                    "resumed the breathing state saved in {} ({:.1} s before this sample): no new baseline",
                    cfg.state_file,
                    (sample_ns - saved.saved_at_ns) as f64 * 1e-9
                );
                Some(c)
            }
            Err(why) => {
                tracing::warn!(node = NAME, "saved breathing state in {} not used: {why}", cfg.state_file);
                None
            }
        },
        _ => None,
    };
    if let Some(previous) = &previous {
        // Same correction markers: keep the baseline and the breathing history.
        computer = computer.continuing(previous);
        s.baseline_saved = true;
    } else if let Some(c) = resumed {
        computer = c;
        s.baseline_saved = true;
    } else if let Some(b) = load_baseline_file(cfg, &s.correction_ids) {
        computer = computer.with_baseline(b);
        s.baseline_saved = true;
    } else {
        // The baseline starts right after the registration's instant, not when its message arrived.
        let since = convert::time_to_ns(&reg.header.stamp);
        for old in s.recent.iter().filter(|o| o.stamp_ns > since) {
            let _ = computer.update(old.stamp_ns as f64 * 1e-9, old);
        }
        tracing::info!(
            node = NAME,
            "recording the calm-breathing baseline for {} s (markers {:?})",
            cfg.baseline_s,
            s.correction_ids
        );
        s.baseline_saved = false;
    }
    s.computer = Some(computer);
}

fn target_msg(
    cfg: &NeedleTargetConfig,
    now_ns: i64,
    source: &r2r::builtin_interfaces::msg::Time,
    t: &Result<Target, InvalidReason>,
) -> msg::NeedleTarget {
    match t {
        Ok(t) => msg::NeedleTarget {
            header: convert::header(now_ns, &cfg.frame_id),
            entry_point: convert::point_msg(&t.entry),
            target_point: convert::point_msg(&t.target),
            direction: convert::vector_msg(&t.direction),
            insertion_depth: t.depth_m,
            valid: true,
            reason_code: msg::NeedleTarget::REASON_NONE as u8,
            reason: String::new(),
            predicted_error: t.predicted_error_m,
            breathing_deviation: t.deviation_m,
            source_stamp: source.clone(),
            prediction_horizon: t.horizon_s,
        },
        Err(reason) => msg::NeedleTarget {
            header: convert::header(now_ns, &cfg.frame_id),
            valid: false,
            reason_code: reason_code(reason),
            reason: reason.to_string(),
            predicted_error: f64::NAN,
            breathing_deviation: f64::NAN,
            insertion_depth: f64::NAN,
            prediction_horizon: f64::NAN,
            source_stamp: source.clone(),
            ..Default::default()
        },
    }
}

fn pose_msg(t: &Target, stamp_ns: i64, frame: &str) -> PoseStamped {
    // The pose's z axis is the insertion direction.
    let q = UnitQuaternion::rotation_between(&Vector3::z(), &t.direction)
        .unwrap_or_else(|| UnitQuaternion::from_axis_angle(&Vector3::x_axis(), std::f64::consts::PI));
    let mut p = PoseStamped::default();
    p.header = convert::header(stamp_ns, frame);
    p.pose.position = convert::point_msg(&t.target);
    p.pose.orientation.x = q.i;
    p.pose.orientation.y = q.j;
    p.pose.orientation.z = q.k;
    p.pose.orientation.w = q.w;
    p
}

fn viz_msg(t: &Target, stamp_ns: i64, frame: &str) -> MarkerArray {
    let sphere = |id: i32, p: &Point3<f64>, rgb: [f32; 3]| {
        let mut m = Marker::default();
        m.header = convert::header(stamp_ns, frame);
        m.ns = "needle_target".into();
        m.id = id;
        m.type_ = Marker::SPHERE as i32;
        m.pose.position = convert::point_msg(p);
        m.pose.orientation.w = 1.0;
        (m.scale.x, m.scale.y, m.scale.z) = (0.01, 0.01, 0.01);
        (m.color.r, m.color.g, m.color.b, m.color.a) = (rgb[0], rgb[1], rgb[2], 1.0);
        m
    };
    let mut line = sphere(2, &Point3::origin(), [1.0, 1.0, 0.0]);
    line.type_ = Marker::LINE_STRIP as i32;
    line.pose.position = Default::default();
    line.scale.x = 0.002;
    line.points = vec![convert::point_msg(&t.entry), convert::point_msg(&t.target)];
    MarkerArray { markers: vec![sphere(0, &t.entry, [0.1, 0.9, 0.1]), sphere(1, &t.target, [0.9, 0.1, 0.1]), line] }
}

pub fn start(node: &mut r2r::Node, cx: &NodeContext) -> Result<(), NodeError> {
    let cfg: NeedleTargetConfig = config(node, NAME)?;
    let mut samples = subscription::<msg::TrackedMarkerArray>(node, MARKERS)?;
    let mut registrations = subscription::<msg::LesionRegistration>(node, REGISTRATION)?;
    let mut classifications = subscription::<msg::MarkerClassification>(node, CLASSIFICATION)?;
    let target_pub = publisher::<msg::NeedleTarget>(node, TARGET)?;
    let pose_pub = publisher::<PoseStamped>(node, TARGET_POSE)?;
    let viz_pub = publisher::<MarkerArray>(node, VIZ_TARGET)?;
    let tf_pub = publisher::<TFMessage>(node, TF)?;
    let state = Arc::new(Mutex::new(State::default()));
    if !cfg.state_file.is_empty() {
        let (resume, refused) = read_state_file(&cfg.state_file);
        let mut s = lock(&state);
        (s.resume, s.state_file_refused) = (resume, refused);
    }
    let last_reason = Arc::new(Mutex::new((u8::MAX, std::time::Instant::now() - Duration::from_secs(2))));

    // Samples are answered once the planning case is loaded (or failed to load): a target computer
    // built before would be rebuilt, and its baseline restarted, when the case arrives.
    let (case_loaded_tx, mut case_loaded) = tokio::sync::watch::channel(cfg.ct_case_dir.trim().is_empty());
    if !cfg.ct_case_dir.trim().is_empty() {
        let (state, dir) = (state.clone(), cfg.ct_case_dir.clone());
        let selection = needle_nav_core::guidance::SelectionConfig {
            search_radius_m: cfg.search_radius_m,
            min_markers: cfg.combination_min_markers as usize,
            max_markers: cfg.combination_max_markers as usize,
        };
        cx.spawn(async move {
            let loaded = tokio::task::spawn_blocking(move || {
                needle_nav_imaging::planning_case::load_planning_case(std::path::Path::new(&dir), &MarkerDetectionConfig::default(), &selection)
            })
            .await;
            match loaded {
                Ok(Ok(c)) => {
                    tracing::info!(
                        node = NAME,
                        "planning case loaded: {} 4-D CT phases for the correlation model",
                        c.phases.len()
                    );
                    let mut s = lock(&state);
                    s.case = Some(c);
                    // Rebuilt on the next sample with the 4-D CT's correlation model; a baseline
                    // already recorded or resumed is kept.
                    s.case_changed = true;
                }
                Ok(Err(e)) => tracing::error!(node = NAME, "planning case: {e}; targets are gated to end-exhale"),
                Err(e) => tracing::error!(node = NAME, "planning case loader failed: {e}"),
            }
            let _ = case_loaded_tx.send(true);
        });
    }

    let publish = {
        let (target_pub, last_reason, cfg) = (target_pub.clone(), last_reason.clone(), cfg.clone());
        move |now_ns: i64,
              source: r2r::builtin_interfaces::msg::Time,
              source_ns: i64,
              t: Result<Target, InvalidReason>| {
            let m = target_msg(&cfg, now_ns, &source, &t);
            {
                // Log when the reason changes kind, at most once a second (dropouts flip it at tracker rate).
                let mut last = last_reason.lock().unwrap_or_else(|p| p.into_inner());
                if last.0 != m.reason_code && last.1.elapsed() >= Duration::from_secs(1) {
                    tracing::info!(
                        node = NAME,
                        valid = m.valid,
                        "target: {}",
                        if m.valid { "valid" } else { &m.reason }
                    );
                    *last = (m.reason_code, std::time::Instant::now());
                }
            }
            if let Err(e) = target_pub.publish(&m) {
                tracing::warn!(node = NAME, "publish failed: {e}");
            }
            if let Ok(t) = &t {
                let pose = pose_msg(t, source_ns, &cfg.frame_id);
                // The target frame for rviz and tf users: z along the insertion direction.
                let mut frame = TransformStamped::default();
                frame.header = pose.header.clone();
                frame.child_frame_id = frames::NEEDLE_TARGET.into();
                (frame.transform.translation.x, frame.transform.translation.y, frame.transform.translation.z) =
                    (pose.pose.position.x, pose.pose.position.y, pose.pose.position.z);
                frame.transform.rotation = pose.pose.orientation.clone();
                let _ = tf_pub.publish(&TFMessage { transforms: vec![frame] });
                let _ = pose_pub.publish(&pose);
                if source_ns / 100_000_000 != (source_ns - 5_000_000) / 100_000_000 {
                    let _ = viz_pub.publish(&viz_msg(t, source_ns, &cfg.frame_id));
                }
            }
        }
    };

    {
        let (state, cfg, publish, cx2) = (state.clone(), cfg.clone(), publish.clone(), cx.clone());
        let mut gate = SampleGate::new(NAME, cfg.sample_checks.clone());
        crate::replay::register(NAME);
        cx.spawn(async move {
            let _ = case_loaded.wait_for(|loaded| *loaded).await;
            while let Some(m) = samples.next().await {
                crate::replay::note_taken(NAME, convert::time_to_ns(&m.header.stamp));
                let raw = convert::sample_from_msg(&m);
                let now = cx2.now_ns();
                // A refused sample is answered as invalid input on its own; it leaves the breathing
                // history, the baseline and the staleness watchdog as they were.
                let sample = match gate.check(&raw, now) {
                    Ok(checked) => {
                        if checked.time_restarted {
                            lock(&state).recent.clear();
                        }
                        checked.sample
                    }
                    Err(rejection) => {
                        let reason = InvalidReason::InvalidInput(format!("tracker sample refused: {rejection}"));
                        publish(now, m.header.stamp.clone(), raw.stamp_ns, Err(reason));
                        continue;
                    }
                };
                let result = {
                    let mut s = lock(&state);
                    s.newest_sample_ns = Some(sample.stamp_ns);
                    s.newest_source_stamp = m.header.stamp.clone();
                    let gate = target_gate::check(&GateInputs {
                        newest_sample_ns: s.newest_sample_ns,
                        now_ns: now,
                        // Non-finite samples were refused by the sample checks above.
                        malformed_marker_ids: Vec::new(),
                        registration: registration_usable(&s.registration),
                        stale_after_s: cfg.stale_after_s(),
                    });
                    match gate {
                        Err(reason) => Err(reason),
                        Ok(()) => {
                            ensure_computer(&mut s, &cfg, sample.stamp_ns);
                            let recorded_before = s.computer.as_ref().is_some_and(|c| c.baseline().is_some());
                            let r = match s.computer.as_mut() {
                                Some(c) => c.update(sample.stamp_ns as f64 * 1e-9, &sample),
                                None => {
                                    Err(InvalidReason::NoRegistration("no correction markers classified yet".into()))
                                }
                            };
                            let baseline = s.computer.as_ref().and_then(|c| c.baseline().cloned());
                            if let (false, Some(b)) = (recorded_before, baseline) {
                                tracing::info!(
                                    node = NAME,
                                    "baseline recorded: breath depth {:.1} mm; correlation model from the 4-D CT: {}",
                                    b.depth_m * 1e3,
                                    s.computer
                                        .as_ref()
                                        .and_then(|c| c.model())
                                        .map(|m| format!(
                                            "fit RMS {:.2} mm over {} frames",
                                            m.fit_rms_m * 1e3,
                                            m.frames
                                        ))
                                        .unwrap_or_else(|| "none (gated to end-exhale)".into())
                                );
                                if !cfg.baseline_file.is_empty() && !s.baseline_saved {
                                    save_baseline_file(&cfg.baseline_file, &b);
                                    s.baseline_saved = true;
                                }
                            }
                            if !cfg.state_file.is_empty() && !s.state_file_refused {
                                let due =
                                    s.state_saved_ns.map_or(true, |t| sample.stamp_ns - t >= STATE_SAVE_PERIOD_NS);
                                if let Some(state) =
                                    s.computer.as_ref().filter(|_| due).and_then(|c| c.saved_state(sample.stamp_ns))
                                {
                                    s.state_saved_ns = Some(sample.stamp_ns);
                                    let path = cfg.state_file.clone();
                                    // Off the sample path: a slow disk must not delay targets.
                                    tokio::task::spawn_blocking(move || save_state_file(&path, &state));
                                }
                            }
                            r
                        }
                    }
                };
                {
                    let mut s = lock(&state);
                    if s.recent.back().is_some_and(|o| o.stamp_ns >= sample.stamp_ns) {
                        s.recent.clear(); // time went back (a replay restarted): the history is void
                    }
                    s.recent.push_back(sample.clone());
                    while s.recent.front().is_some_and(|o| sample.stamp_ns - o.stamp_ns > CATCH_UP_NS) {
                        s.recent.pop_front();
                    }
                }
                publish(now, m.header.stamp.clone(), sample.stamp_ns, result);
            }
        });
    }
    {
        let state = state.clone();
        cx.spawn(async move {
            while let Some(r) = registrations.next().await {
                lock(&state).registration = Some(r);
            }
        });
    }
    {
        let state = state.clone();
        cx.spawn(async move {
            while let Some(c) = classifications.next().await {
                lock(&state).correction_ids = c.correction_marker_ids.clone();
            }
        });
    }
    {
        // Watchdog: when samples stop, say so at least every staleness period.
        let (cfg, cx2) = (cfg.clone(), cx.clone());
        cx.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(cfg.stale_after_s().max(0.01)));
            loop {
                tick.tick().await;
                let now = cx2.now_ns();
                let (result, source) = {
                    let s = lock(&state);
                    match s.newest_sample_ns {
                        Some(t) if (now - t) as f64 * 1e-9 <= cfg.stale_after_s() => continue,
                        newest => (
                            target_gate::check(&GateInputs {
                                newest_sample_ns: newest,
                                now_ns: now,
                                malformed_marker_ids: Vec::new(),
                                registration: registration_usable(&s.registration),
                                stale_after_s: cfg.stale_after_s(),
                            })
                            // Only reached when no sample came or the newest is stale: never Ok.
                            .err()
                            .unwrap_or(InvalidReason::Starting),
                            s.newest_source_stamp.clone(),
                        ),
                    }
                };
                publish(now, source.clone(), convert::time_to_ns(&source), Err(result));
            }
        });
    }
    Ok(())
}
