//! lesion_registration: loads the planning case (markers detected in the CT), takes the tracked
//! registration markers at the CT's breathing phase, matches them to the CT markers by their
//! distance pattern, registers (with outlier exclusion) and publishes the lesion and reference
//! entry in the tracker frame (latched). Every failure is published as a status with its reason.

use super::{config, lock, publisher, subscription, SampleGate};
use crate::config::{EntrySource, LesionRegistrationConfig};
use crate::core::ct_markers::MarkerDetectionConfig;
use crate::core::guidance::{positions_at_ct_phase, register_case, CaseRegistration, GuidanceError, PlanningCase};
use crate::core::registration::RegistrationError;
use crate::core::tracking::TrackerSample;
use crate::interfaces::{frames, CLASSIFICATION, MARKERS, PLAN, REGISTRATION, TF_STATIC};
use crate::ros::convert;
use crate::ros::msg;
use crate::ros::runtime::{NodeContext, NodeError};
use futures::StreamExt;
use nalgebra::Point3;
use r2r::geometry_msgs::msg::TransformStamped;
use r2r::tf2_msgs::msg::TFMessage;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NAME: &str = "lesion_registration";

#[derive(Default)]
struct State {
    case: Option<Result<PlanningCase, String>>,
    registration_ids: Vec<u32>,
    correction_ids: Vec<u32>,
    window: VecDeque<TrackerSample>,
    frame_id: String,
    plan_entry_ct: Option<Point3<f64>>,
    /// Update slot (tracker time / update period) of the last registration update. Updates follow
    /// the samples' own clock on a fixed grid, so that a bag replayed at any rate registers at the
    /// same instants as the live run, whenever either started.
    last_update_slot: Option<i64>,
    /// When the newest sample arrived (wall clock): without samples a slow timer reports the state.
    last_sample_at: Option<std::time::Instant>,
}

/// What one registration update works on, taken when its sample arrived.
struct UpdateInputs {
    /// Header stamp of the sample that started this update (none from the timer).
    sample: Option<i64>,
    now_ns: i64,
    window: Vec<TrackerSample>,
    registration_ids: Vec<u32>,
    correction_ids: Vec<u32>,
    frame_id: String,
    plan_entry_ct: Option<Point3<f64>>,
}

impl State {
    fn inputs(&self, now_ns: i64) -> UpdateInputs {
        UpdateInputs {
            sample: None,
            now_ns,
            window: self.window.iter().cloned().collect(),
            registration_ids: self.registration_ids.clone(),
            correction_ids: self.correction_ids.clone(),
            frame_id: self.frame_id.clone(),
            plan_entry_ct: self.plan_entry_ct,
        }
    }
}

impl UpdateInputs {
    fn with_sample(self, header_stamp: i64) -> UpdateInputs {
        UpdateInputs { sample: Some(header_stamp), ..self }
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
        GuidanceError::Correspondence(crate::core::correspondence::CorrespondenceError::Ambiguous { .. }) => {
            msg::LesionRegistration::STATUS_DEGENERATE as u8
        }
        GuidanceError::LesionOutsideScan { .. }
        | GuidanceError::LesionNotInTissue { .. }
        | GuidanceError::MarkerOutsideScan { .. } => msg::LesionRegistration::STATUS_LESION_NOT_IN_SCAN as u8,
        GuidanceError::Case { .. }
        | GuidanceError::CaseFile { .. }
        | GuidanceError::Dicom(_)
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
    let cfg: LesionRegistrationConfig = config(node, NAME)?;
    let mut classifications = subscription::<msg::MarkerClassification>(node, CLASSIFICATION)?;
    let mut samples = subscription::<msg::TrackedMarkerArray>(node, MARKERS)?;
    let mut plans = subscription::<msg::NeedlePlan>(node, PLAN)?;
    let registration_pub = publisher::<msg::LesionRegistration>(node, REGISTRATION)?;
    let tf_pub = publisher::<TFMessage>(node, TF_STATIC)?;
    let state = Arc::new(Mutex::new(State { frame_id: frames::TRACKER.into(), ..Default::default() }));
    let publish = {
        let registration_pub = registration_pub.clone();
        let last = Arc::new(Mutex::new(String::new()));
        move |m: msg::LesionRegistration| {
            let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
            if *last != m.status_message {
                tracing::info!(node = NAME, status = m.status, "{}", m.status_message);
                *last = m.status_message.clone();
            }
            if let Err(e) = registration_pub.publish(&m) {
                tracing::warn!(node = NAME, "publish failed: {e}");
            }
            crate::ros::replay::note_shared();
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
        let (state, dir, threshold) = (state.clone(), cfg.ct_case_dir.clone(), cfg.marker_threshold_hu);
        cx.spawn(async move {
            let detection = MarkerDetectionConfig { threshold_hu: threshold, ..Default::default() };
            let loaded = tokio::task::spawn_blocking(move || {
                PlanningCase::load(std::path::Path::new(&dir), &detection, &Default::default())
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
                let mut s = lock(&state);
                s.registration_ids = c.registration_marker_ids.clone();
                s.correction_ids = c.correction_marker_ids.clone();
            }
        });
    }
    let (updates_tx, mut updates) = tokio::sync::mpsc::unbounded_channel::<UpdateInputs>();
    {
        let (state, window_ns) = (state.clone(), (cfg.window_s * 1e9) as i64);
        let period_ns = (cfg.update_period_s * 1e9) as i64;
        let (mut gate, cx2) = (SampleGate::new(NAME, cfg.sample_checks.clone()), cx.clone());
        // A sample that starts an update counts as taken once the update is published (lockstep replay).
        let updates_run = !cfg.ct_case_dir.trim().is_empty();
        crate::ros::replay::register(NAME);
        cx.spawn(async move {
            while let Some(m) = samples.next().await {
                let header_stamp = convert::time_to_ns(&m.header.stamp);
                // A refused sample never enters the window the registration averages.
                let Ok(checked) = gate.check(&convert::sample_from_msg(&m), cx2.now_ns()) else {
                    crate::ros::replay::note_taken(NAME, header_stamp);
                    continue;
                };
                let sample = checked.sample;
                let stamp = sample.stamp_ns;
                let mut s = lock(&state);
                if checked.time_restarted {
                    s.window.clear();
                }
                if !m.header.frame_id.is_empty() {
                    s.frame_id = m.header.frame_id.clone();
                }
                s.window.push_back(sample);
                while s.window.front().zip(s.window.back()).is_some_and(|(a, b)| b.stamp_ns - a.stamp_ns > window_ns) {
                    s.window.pop_front();
                }
                s.last_sample_at = Some(std::time::Instant::now());
                let slot = stamp.div_euclid(period_ns.max(1));
                if s.last_update_slot != Some(slot) && updates_run {
                    s.last_update_slot = Some(slot);
                    let _ = updates_tx.send(s.inputs(stamp).with_sample(header_stamp));
                } else {
                    s.last_update_slot = Some(slot);
                    crate::ros::replay::note_taken(NAME, header_stamp);
                }
            }
        });
    }
    {
        let (state, cfg) = (state.clone(), cfg.clone());
        cx.spawn(async move {
            while let Some(p) = plans.next().await {
                if p.status == msg::NeedlePlan::STATUS_OK as u8 && cfg.entry_source == EntrySource::Plan {
                    lock(&state).plan_entry_ct = Some(convert::point_from_msg(&p.entry_point));
                }
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
            let mut inputs = tokio::select! {
                Some(inputs) = updates.recv() => inputs,
                _ = tick.tick() => {
                    let s = lock(&state);
                    if s.last_sample_at.is_some_and(|t| t.elapsed() < 2 * period) {
                        continue;
                    }
                    s.inputs(cx2.now_ns())
                }
            };
            let _taken = inputs.sample.take().map(|stamp| crate::ros::replay::TakenOnDrop(NAME, stamp));
            let UpdateInputs {
                sample: _,
                now_ns: now,
                window,
                registration_ids: reg_ids,
                correction_ids: cor_ids,
                frame_id: frame,
                plan_entry_ct: plan_entry,
            } = inputs;
            // An update that came while the case was loading waits for it rather than being skipped,
            // so registrations happen at the same tracker instants however long loading takes.
            if lock(&state).case.is_none() && case_loaded.wait_for(|loaded| *loaded).await.is_err() {
                continue;
            }
            let case = lock(&state).case.clone();
            let case = match case {
                None => continue, // the loader is gone
                Some(Err(e)) => {
                    publish(status_msg(
                        now,
                        &frame,
                        msg::LesionRegistration::STATUS_NO_IMAGE_DATA as u8,
                        format!("planning case: {e}"),
                    ));
                    continue;
                }
                Some(Ok(c)) => c,
            };
            if reg_ids.is_empty() || window.is_empty() {
                publish(status_msg(
                    now,
                    &frame,
                    msg::LesionRegistration::STATUS_NOT_ENOUGH_MARKERS as u8,
                    "waiting for tracked markers and their classification".into(),
                ));
                continue;
            }
            let tracked = positions_at_ct_phase(&window, &reg_ids, &cor_ids);
            let stamp = window.last().map(|s| s.stamp_ns).unwrap_or(now);
            match register_case(&case, &tracked, &cfg.registration(), cfg.correspondence_tolerance_m) {
                Ok(r) => {
                    let entry_ct = match cfg.entry_source {
                        EntrySource::Preset => Some(case.entry_m),
                        EntrySource::Plan => plan_entry,
                        EntrySource::Manual => {
                            let m = &cfg.manual_entry_ct_m;
                            Some(Point3::new(m[0], m[1], m[2]))
                        }
                    };
                    let Some(entry_ct) = entry_ct else {
                        publish(status_msg(
                            stamp,
                            &frame,
                            msg::LesionRegistration::STATUS_NOT_ENOUGH_MARKERS as u8,
                            "entry_source is plan but no valid plan has arrived".into(),
                        ));
                        continue;
                    };
                    let (entry_tracker, tre_entry) = r.entry_in_tracker(&case, &entry_ct, cfg.fle_rms_m);
                    publish(registration_msg(&r, &cfg, stamp, &frame, entry_tracker, tre_entry));
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
                Err(e) => publish(status_msg(stamp, &frame, status_of(&e), e.to_string())),
            }
        }
    });
    Ok(())
}
