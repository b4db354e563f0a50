//! needle_target: the breathing-corrected needle target at tracker rate, gated. A target that
//! fails any gate is published with valid = false and the reason; the PoseStamped for generic arm
//! controllers and the rviz markers are published only for valid targets. A watchdog publishes
//! STALE when the tracker stops, so an old target is never left standing as valid.

use super::{config, lock, publisher, subscription, SampleGate};
use crate::context::{NodeContext, NodeError};
use crate::convert;
use crate::msg;
use futures::StreamExt;
use nalgebra::{Point3, UnitQuaternion, Vector3};
use needle_nav_core::correction::Baseline;
use needle_nav_core::guidance::{RegisteredPlan, SavedBreathingState, Target};
use needle_nav_core::interfaces::{frames, CLASSIFICATION, MARKERS, REGISTRATION, TARGET, TARGET_POSE, TF, VIZ_TARGET};
use needle_nav_core::target_gate::InvalidReason;
use needle_nav_nodes::config::NeedleTargetConfig;
use needle_nav_nodes::diagnostics::{BaselineState, TargetHealth};
use needle_nav_nodes::needle_target::{
    BaselineFile, Level, NeedleTargetEvent, NeedleTargetMachine, StateFile, TargetRegistration,
};
use r2r::geometry_msgs::msg::{PoseStamped, TransformStamped};
use r2r::tf2_msgs::msg::TFMessage;
use r2r::visualization_msgs::msg::{Marker, MarkerArray};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NAME: &str = "needle_target";

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

/// What `baseline_file` holds, for the state machine (which reports anything that is not a
/// baseline for its correction markers; the file is kept either way).
fn read_baseline_file(cfg: &NeedleTargetConfig) -> BaselineFile {
    if cfg.baseline_file.is_empty() {
        return BaselineFile::Off;
    }
    match std::fs::read_to_string(&cfg.baseline_file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BaselineFile::Absent,
        Err(e) => BaselineFile::Unreadable(e.to_string()),
        Ok(text) => match serde_json::from_str::<Baseline>(&text) {
            Err(e) => BaselineFile::NotABaseline(e.to_string()),
            Ok(b) => BaselineFile::Found(b),
        },
    }
}

/// Saves a recorded baseline where no file exists yet; an existing file is never replaced.
/// True when the file now holds `b`.
fn save_baseline_file(path: &str, b: &Baseline) -> bool {
    if std::path::Path::new(path).exists() {
        tracing::info!(node = NAME, "baseline_file {path} exists: the new baseline is not saved over it");
        return false;
    }
    match serde_json::to_vec(b)
        .map(|bytes| needle_nav_imaging::output_files::write_file_atomically(std::path::Path::new(path), &bytes))
    {
        Ok(Ok(())) => {
            tracing::info!(node = NAME, "baseline saved to {path}");
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(node = NAME, "cannot save the baseline to {path}: {e}");
            false
        }
        Err(e) => {
            tracing::warn!(node = NAME, "cannot encode the baseline: {e}");
            false
        }
    }
}

/// A registration message as the state machine sees it.
fn registration_input(r: &msg::LesionRegistration) -> TargetRegistration {
    TargetRegistration {
        stamp_ns: convert::time_to_ns(&r.header.stamp),
        plan: if convert::registration_usable(r) {
            Ok(RegisteredPlan {
                transform: convert::transform_from_msg(&r.image_to_tracker),
                lesion_tracker: convert::point_from_msg(&r.lesion_position),
                entry_tracker: convert::point_from_msg(&r.reference_entry_point),
                tre_lesion_m: r.predicted_tre_lesion,
            })
        } else {
            Err(format!("registration status {}: {}", r.status, r.status_message))
        },
    }
}

fn log_event(e: &NeedleTargetEvent) {
    match e.level() {
        Level::Info => tracing::info!(node = NAME, "{e}"),
        Level::Warn => tracing::warn!(node = NAME, "{e}"),
        Level::Error => tracing::error!(node = NAME, "{e}"),
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

/// The invalid target published when the node is deactivated. The message has no reason code of
/// its own for it: REASON_STARTING ("not received its inputs yet": no target can be given) with
/// the reason in words.
fn deactivated_msg(
    cfg: &NeedleTargetConfig,
    now_ns: i64,
    source: r2r::builtin_interfaces::msg::Time,
) -> msg::NeedleTarget {
    msg::NeedleTarget {
        reason_code: msg::NeedleTarget::REASON_STARTING as u8,
        reason: needle_nav_nodes::lifecycle::DEACTIVATED_REASON.to_string(),
        ..target_msg(cfg, now_ns, &source, &Err(InvalidReason::Starting))
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

/// The node's state: the machine holding every rule, and the header stamp of the newest sample
/// it accepted (echoed in the watchdog's answers).
struct Shell {
    machine: NeedleTargetMachine,
    newest_source_stamp: r2r::builtin_interfaces::msg::Time,
}

pub fn start(node: &mut r2r::Node, cx: &NodeContext) -> Result<(), NodeError> {
    let (cfg, mut parameters): (NeedleTargetConfig, _) = config(node, cx, NAME)?;
    let mut samples = subscription::<msg::TrackedMarkerArray>(node, MARKERS)?;
    let mut registrations = subscription::<msg::LesionRegistration>(node, REGISTRATION)?;
    let mut classifications = subscription::<msg::MarkerClassification>(node, CLASSIFICATION)?;
    let target_pub = publisher::<msg::NeedleTarget>(node, cx, TARGET)?;
    let pose_pub = publisher::<PoseStamped>(node, cx, TARGET_POSE)?;
    let viz_pub = publisher::<MarkerArray>(node, cx, VIZ_TARGET)?;
    let tf_pub = publisher::<TFMessage>(node, cx, TF)?;
    let state_file = if cfg.state_file.is_empty() {
        StateFile::Off
    } else {
        match read_state_file(&cfg.state_file) {
            (_, true) => StateFile::NotOurs,
            (Some(saved), false) => StateFile::Saved(Box::new(saved)),
            (None, false) => StateFile::Absent,
        }
    };
    let machine = NeedleTargetMachine::new(cfg.clone(), read_baseline_file(&cfg), state_file);
    let state = Arc::new(Mutex::new(Shell { machine, newest_source_stamp: Default::default() }));
    let last_reason = Arc::new(Mutex::new((u8::MAX, std::time::Instant::now() - Duration::from_secs(2))));
    {
        // Deactivated by the lifecycle manager: say at once that there is no valid target, so
        // that an arm controller never keeps following the last valid one.
        let (target_pub, cfg, state, cx2) = (target_pub.clone(), cfg.clone(), state.clone(), cx.clone());
        cx.on_deactivate(move || {
            let source = lock(&state).newest_source_stamp.clone();
            let m = deactivated_msg(&cfg, cx2.now_ns(), source);
            tracing::info!(node = NAME, "deactivated: published an invalid target ({})", m.reason);
            if let Err(e) = target_pub.publish_regardless(&m) {
                tracing::warn!(node = NAME, "the deactivation target could not be published: {e}");
            }
        });
    }
    let health = Arc::new(Mutex::new(TargetHealth::new(&cfg.diagnostics, cfg.tracker_rate_hz, &cx.name, cx.now_ns())));
    crate::diagnostics::start(node, cx, health.clone(), parameters.clone(), |h, c: &NeedleTargetConfig| {
        h.set_thresholds(&c.diagnostics, c.tracker_rate_hz)
    })?;

    // Samples are answered once the planning case is loaded (or failed to load): a target computer
    // built before would be rebuilt, and its baseline restarted, when the case arrives.
    let (case_loaded_tx, mut case_loaded) = tokio::sync::watch::channel(cfg.ct_case_dir.trim().is_empty());
    if !cfg.ct_case_dir.trim().is_empty() {
        // Search region, combination sizes and criterion from the parameters.
        let (state, dir, load_options) = (state.clone(), cfg.ct_case_dir.clone(), cfg.load_options());
        cx.spawn(async move {
            let loaded = tokio::task::spawn_blocking(move || {
                needle_nav_imaging::planning_case::load_planning_case_with(std::path::Path::new(&dir), &load_options)
            })
            .await;
            match loaded {
                Ok(Ok(c)) => {
                    tracing::info!(
                        node = NAME,
                        "planning case loaded: {} 4-D CT phases for the correlation model",
                        c.phases.len()
                    );
                    lock(&state).machine.on_case(c);
                }
                Ok(Err(e)) => tracing::error!(node = NAME, "planning case: {e}; targets are gated to end-exhale"),
                Err(e) => tracing::error!(node = NAME, "planning case loader failed: {e}"),
            }
            let _ = case_loaded_tx.send(true);
        });
    }

    let publish = {
        let (target_pub, last_reason, cfg) = (target_pub.clone(), last_reason.clone(), cfg.clone());
        let health = health.clone();
        move |now_ns: i64,
              source: r2r::builtin_interfaces::msg::Time,
              source_ns: i64,
              t: Result<Target, InvalidReason>| {
            lock(&health).target(now_ns, t.as_ref().map(|_| ()));
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
        let health = health.clone();
        let mut gate = SampleGate::new(NAME, cfg.sample_checks.clone());
        crate::replay::register(NAME);
        cx.spawn(async move {
            let _ = case_loaded.wait_for(|loaded| *loaded).await;
            while let Some(m) = samples.next().await {
                // Parameters set since the last sample: tolerance, gates and checks from this one on.
                if let Some(new) = parameters.take() {
                    gate.set_checks(new.sample_checks.clone());
                    lock(&state).machine.apply_dynamic(&new);
                }
                crate::replay::note_taken(NAME, convert::time_to_ns(&m.header.stamp));
                let raw = convert::sample_from_msg(&m);
                let now = cx2.now_ns();
                let checked = gate.check(&raw, now);
                let accepted = checked.is_ok();
                let out = {
                    let mut s = lock(&state);
                    if accepted {
                        s.newest_source_stamp = m.header.stamp.clone();
                    }
                    let out = s.machine.on_sample(checked, raw.stamp_ns, now);
                    let baseline = match s.machine.computer() {
                        None => BaselineState::NotStarted,
                        Some(c) if c.baseline().is_some() => BaselineState::Recorded,
                        Some(_) => BaselineState::Recording,
                    };
                    let mut h = lock(&health);
                    match accepted {
                        true => h.inputs.record(now, raw.stamp_ns, raw.visible_ids()),
                        false => h.inputs.refused(now),
                    }
                    h.baseline(baseline);
                    out
                };
                out.events.iter().for_each(log_event);
                if let Some(b) = out.save_baseline {
                    if save_baseline_file(&cfg.baseline_file, &b) {
                        lock(&state).machine.baseline_file_written(b);
                    }
                }
                if let Some(saved) = out.save_state {
                    let path = cfg.state_file.clone();
                    // Off the sample path: a slow disk must not delay targets.
                    tokio::task::spawn_blocking(move || save_state_file(&path, &saved));
                }
                publish(now, m.header.stamp.clone(), out.source_ns, out.target);
            }
        });
    }
    {
        let state = state.clone();
        cx.spawn(async move {
            while let Some(r) = registrations.next().await {
                lock(&state).machine.on_registration(registration_input(&r));
            }
        });
    }
    {
        let state = state.clone();
        cx.spawn(async move {
            while let Some(c) = classifications.next().await {
                lock(&state).machine.on_classification(c.correction_marker_ids.clone());
            }
        });
    }
    {
        // Watchdog: when samples stop, say so at least every staleness period.
        let cx2 = cx.clone();
        cx.spawn(async move {
            loop {
                // The staleness period in force: stale_after_periods may be set while the node runs.
                let period = lock(&state).machine.config().stale_after_s().max(0.01);
                tokio::time::sleep(Duration::from_secs_f64(period)).await;
                let now = cx2.now_ns();
                let (reason, source) = {
                    let s = lock(&state);
                    match s.machine.on_tick(now) {
                        None => continue,
                        Some(reason) => (reason, s.newest_source_stamp.clone()),
                    }
                };
                publish(now, source.clone(), convert::time_to_ns(&source), Err(reason));
            }
        });
    }
    Ok(())
}
