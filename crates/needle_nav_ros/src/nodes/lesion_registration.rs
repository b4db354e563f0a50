//! lesion_registration: loads the planning case (markers detected in the CT), takes the tracked
//! registration markers at the CT's breathing phase, matches them to the CT markers by their
//! distance pattern, registers (with outlier exclusion) and publishes the lesion and reference
//! entry in the tracker frame (latched). Every failure is published as a status with its reason.

use super::{config, lock, publisher, subscription, SampleGate};
use crate::context::{NodeContext, NodeError};
use crate::convert;
use crate::msg;
use futures::StreamExt;
use nalgebra::Point3;
use needle_nav_core::guidance::{CaseRegistration, GuidanceError, PlanningCase};
use needle_nav_core::interfaces::{frames, CLASSIFICATION, MARKERS, PLAN, REGISTRATION, TF_STATIC};
use needle_nav_core::registration::RegistrationError;
use needle_nav_nodes::config::LesionRegistrationConfig;
use needle_nav_nodes::diagnostics::RegistrationHealth;
use needle_nav_nodes::lesion_registration::{
    run_update, LesionRegistrationMachine, NoRegistration, Registered, UpdateInputs,
};
use r2r::geometry_msgs::msg::TransformStamped;
use r2r::tf2_msgs::msg::TFMessage;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NAME: &str = "lesion_registration";

/// The node's state: the machine holding every rule, the planning case once loaded (or why it
/// did not load), and when the newest sample arrived (wall clock: without samples a slow timer
/// reports the state).
struct Shell {
    machine: LesionRegistrationMachine,
    case: Option<Result<PlanningCase, String>>,
    last_sample_at: Option<std::time::Instant>,
}

/// An update asked for by the machine, with the header stamp of the sample that started it (none
/// from the timer): that sample counts as taken once the update is published (lockstep replay).
struct Update {
    sample: Option<i64>,
    inputs: UpdateInputs,
}

/// The status a refused update is published with.
fn refusal_status(e: &NoRegistration) -> u8 {
    match e {
        NoRegistration::NoCase(_) => msg::LesionRegistration::STATUS_NO_IMAGE_DATA as u8,
        NoRegistration::WaitingForMarkers | NoRegistration::NoPlanEntry => {
            msg::LesionRegistration::STATUS_NOT_ENOUGH_MARKERS as u8
        }
        NoRegistration::Failed(e) => status_of(e),
    }
}

fn status_of(e: &GuidanceError) -> u8 {
    (match e {
        GuidanceError::Registration(RegistrationError::Degenerate { .. }) => {
            msg::LesionRegistration::STATUS_DEGENERATE as u8
        }
        GuidanceError::Registration(RegistrationError::FreTooHigh { .. }) => {
            msg::LesionRegistration::STATUS_FRE_TOO_HIGH as u8
        }
        GuidanceError::Correspondence(needle_nav_core::correspondence::CorrespondenceError::Ambiguous { .. }) => {
            msg::LesionRegistration::STATUS_DEGENERATE as u8
        }
        GuidanceError::LesionOutsideScan { .. }
        | GuidanceError::LesionNotInTissue { .. }
        | GuidanceError::MarkerOutsideScan { .. } => msg::LesionRegistration::STATUS_LESION_NOT_IN_SCAN as u8,
        GuidanceError::Case { .. }
        | GuidanceError::CaseFile { .. }
        | GuidanceError::CtImage { .. }
        | GuidanceError::CtMarkers(_) => msg::LesionRegistration::STATUS_NO_IMAGE_DATA as u8,
        _ => msg::LesionRegistration::STATUS_NOT_ENOUGH_MARKERS as u8,
    }) as u8
}

fn registration_msg(
    r: &CaseRegistration,
    cfg: &LesionRegistrationConfig,
    stamp_ns: i64,
    frame: &str,
    entry_tracker: Point3<f64>,
    tre_entry: f64,
) -> msg::LesionRegistration {
    let outliers = !r.excluded.is_empty();
    msg::LesionRegistration {
        header: convert::header(stamp_ns, frame),
        status: if outliers {
            msg::LesionRegistration::STATUS_OUTLIER_EXCLUDED as u8
        } else {
            msg::LesionRegistration::STATUS_OK as u8
        },
        status_message: if outliers {
            format!(
                "registered with {} markers; excluded outliers {:?}",
                r.used.len(),
                r.excluded.iter().map(|e| e.1).collect::<Vec<_>>()
            )
        } else {
            format!("registered with {} markers", r.used.len())
        },
        image_frame_id: cfg.image_frame_id.clone(),
        image_to_tracker: convert::transform_msg(&r.transform),
        lesion_position: convert::point_msg(&r.lesion_tracker),
        reference_entry_point: convert::point_msg(&entry_tracker),
        marker_ids_used: r.used.iter().map(|u| u.1).collect(),
        marker_residuals: r.result.residuals.clone(),
        marker_ids_excluded: r.excluded.iter().map(|e| e.1).collect(),
        fre_rms: r.result.fre_rms,
        predicted_tre_lesion: r.tre_lesion_m,
        predicted_tre_entry: tre_entry,
        fle_rms: cfg.fle_rms_m,
    }
}

pub fn start(node: &mut r2r::Node, cx: &NodeContext) -> Result<(), NodeError> {
    let (cfg, mut parameters): (LesionRegistrationConfig, _) = config(node, cx, NAME)?;
    let mut classifications = subscription::<msg::MarkerClassification>(node, CLASSIFICATION)?;
    let mut samples = subscription::<msg::TrackedMarkerArray>(node, MARKERS)?;
    let mut plans = subscription::<msg::NeedlePlan>(node, PLAN)?;
    let registration_pub = publisher::<msg::LesionRegistration>(node, cx, REGISTRATION)?;
    let tf_pub = publisher::<TFMessage>(node, cx, TF_STATIC)?;
    let state = Arc::new(Mutex::new(Shell {
        machine: LesionRegistrationMachine::new(cfg.clone(), frames::TRACKER),
        case: None,
        last_sample_at: None,
    }));
    let health = Arc::new(Mutex::new(RegistrationHealth::new(&cfg.diagnostics, &cx.name, cx.now_ns())));
    crate::diagnostics::start(node, cx, health.clone(), parameters.clone(), |h, c: &LesionRegistrationConfig| {
        h.set_thresholds(&c.diagnostics)
    })?;
    let publish = {
        let (registration_pub, health) = (registration_pub.clone(), health.clone());
        let last = Arc::new(Mutex::new(String::new()));
        move |m: msg::LesionRegistration| {
            if convert::registration_usable(&m) {
                lock(&health).registration.registered(m.fre_rms, m.predicted_tre_lesion, m.marker_ids_used.len());
            } else {
                lock(&health).registration.refused(m.status_message.clone());
            }
            let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
            if *last != m.status_message {
                tracing::info!(node = NAME, status = m.status, "{}", m.status_message);
                *last = m.status_message.clone();
            }
            if let Err(e) = registration_pub.publish(&m) {
                tracing::warn!(node = NAME, "publish failed: {e}");
            }
            crate::replay::note_shared();
        }
    };
    let status_msg = {
        let cfg = cfg.clone();
        move |stamp_ns: i64, frame: &str, status: u8, message: String| msg::LesionRegistration {
            header: convert::header(stamp_ns, frame),
            status,
            status_message: message,
            image_frame_id: cfg.image_frame_id.clone(),
            fle_rms: cfg.fle_rms_m,
            ..Default::default()
        }
    };

    if cfg.ct_case_dir.trim().is_empty() {
        publish(status_msg(
            cx.now_ns(),
            frames::TRACKER,
            msg::LesionRegistration::STATUS_NO_IMAGE_DATA as u8,
            "no planning CT configured (parameter ct_case_dir is empty)".into(),
        ));
    }
    // Set once the planning case is loaded (or failed to load).
    let (case_loaded_tx, mut case_loaded) = tokio::sync::watch::channel(false);
    if !cfg.ct_case_dir.trim().is_empty() {
        // Loading and marker detection take a moment: off the node's tasks.
        // Marker threshold and the scan check from the parameters.
        let (state, dir, load_options) = (state.clone(), cfg.ct_case_dir.clone(), cfg.load_options());
        cx.spawn(async move {
            let loaded = tokio::task::spawn_blocking(move || {
                needle_nav_imaging::planning_case::load_planning_case_with(std::path::Path::new(&dir), &load_options)
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
            match &loaded {
                Ok(c) => tracing::info!(
                    node = NAME,
                    "planning case: {} markers in the CT, {} 4-D CT phases",
                    c.image_markers_m.len(),
                    c.phases.len()
                ),
                Err(e) => tracing::error!(node = NAME, "planning case: {e}"),
            }
            lock(&state).case = Some(loaded);
            let _ = case_loaded_tx.send(true);
        });
    }
    {
        let state = state.clone();
        cx.spawn(async move {
            while let Some(c) = classifications.next().await {
                lock(&state)
                    .machine
                    .on_classification(c.registration_marker_ids.clone(), c.correction_marker_ids.clone());
            }
        });
    }
    let (updates_tx, mut updates) = tokio::sync::mpsc::unbounded_channel::<Update>();
    {
        let (state, health) = (state.clone(), health.clone());
        let (mut gate, cx2) = (SampleGate::new(NAME, cfg.sample_checks.clone()), cx.clone());
        crate::replay::register(NAME);
        cx.spawn(async move {
            while let Some(m) = samples.next().await {
                // Parameters set since the last sample: limits and checks from this one on.
                if let Some(new) = parameters.take() {
                    gate.set_checks(new.sample_checks.clone());
                    lock(&state).machine.apply_dynamic(&new);
                }
                let header_stamp = convert::time_to_ns(&m.header.stamp);
                // A refused sample never enters the window the registration averages.
                let (raw, now) = (convert::sample_from_msg(&m), cx2.now_ns());
                let checked = gate.check(&raw, now);
                match &checked {
                    Ok(_) => lock(&health).inputs.record(now, raw.stamp_ns, raw.visible_ids()),
                    Err(_) => lock(&health).inputs.refused(now),
                }
                let Ok(checked) = checked else {
                    crate::replay::note_taken(NAME, header_stamp);
                    continue;
                };
                let mut s = lock(&state);
                s.last_sample_at = Some(std::time::Instant::now());
                match s.machine.on_sample(checked, &m.header.frame_id) {
                    Some(inputs) => {
                        let _ = updates_tx.send(Update { sample: Some(header_stamp), inputs });
                    }
                    None => crate::replay::note_taken(NAME, header_stamp),
                }
            }
        });
    }
    {
        let state = state.clone();
        cx.spawn(async move {
            while let Some(p) = plans.next().await {
                let ok = p.status == msg::NeedlePlan::STATUS_OK as u8;
                lock(&state).machine.on_plan(ok, convert::point_from_msg(&p.entry_point));
            }
        });
    }
    if cfg.ct_case_dir.trim().is_empty() {
        return Ok(());
    }
    let cx2 = cx.clone();
    cx.spawn(async move {
        let period = Duration::from_secs_f64(cfg.update_period_s);
        let mut tick = tokio::time::interval(period);
        loop {
            // Updates come with the samples (tracker time); the timer only speaks while none arrive.
            let Update { sample, inputs } = tokio::select! {
                Some(update) = updates.recv() => update,
                _ = tick.tick() => {
                    let s = lock(&state);
                    if s.last_sample_at.is_some_and(|t| t.elapsed() < 2 * period) {
                        continue;
                    }
                    Update { sample: None, inputs: s.machine.inputs(cx2.now_ns()) }
                }
            };
            let _taken = sample.map(|stamp| crate::replay::TakenOnDrop(NAME, stamp));
            // An update that came while the case was loading waits for it rather than being skipped,
            // so registrations happen at the same tracker instants however long loading takes.
            if lock(&state).case.is_none() && case_loaded.wait_for(|loaded| *loaded).await.is_err() {
                continue;
            }
            let case = lock(&state).case.clone();
            let Some(case) = case else { continue }; // the loader is gone
                                                     // The machine's configuration: with the limits set at run time.
            let cfg = lock(&state).machine.config().clone();
            let update = run_update(&cfg, &case, inputs);
            let frame = update.frame_id;
            match update.result {
                Ok(Registered { registration: r, entry_tracker, tre_entry_m }) => {
                    let stamp = update.stamp_ns;
                    publish(registration_msg(&r, &cfg, stamp, &frame, entry_tracker, tre_entry_m));
                    // The same transform for tf users (rviz, the arm's planners): pose of the CT frame in the tracker frame.
                    let tf = TFMessage {
                        transforms: vec![TransformStamped {
                            header: convert::header(stamp, &frame),
                            child_frame_id: cfg.image_frame_id.clone(),
                            transform: convert::transform_msg(&r.transform),
                        }],
                    };
                    if let Err(e) = tf_pub.publish(&tf) {
                        tracing::warn!(node = NAME, "tf publish failed: {e}");
                    }
                }
                Err(e) => publish(status_msg(update.stamp_ns, &frame, refusal_status(&e), e.to_string())),
            }
        }
    });
    Ok(())
}
